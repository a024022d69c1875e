"""Endpoints on other boxes (`--endpoint http://HOST:PORT`): watched beside the local ones (no Textual).

A remote endpoint is probed like a local one (GET /health, /stats, with its Bearer key) and
its box's GPUs come from its GET /gpu (engine/service/gpu_telemetry.py), one request per box
however many of its endpoints are watched. Spawn, stop and restart stay with the box that
runs it; a preset switch goes through PUT /preset as for a local endpoint.

`RemoteEndpoints.run(refresh)` polls until `shutdown()` and publishes `RemotesChanged` after
each round; `ui_messages.forward_remotes` turns those into Textual messages.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

from console.config import RemoteSpec
from console.endpoint_client import EndpointClient, EndpointError, Probe, StatsSummary
from console.gpu import HISTORY, GpuSample, GpuSnapshot
from console.publisher import Publisher
from console.supervisor.model import EndpointView, status_from_health

_SAMPLE_FIELDS = {f.name for f in fields(GpuSample)} - {"util_history", "mem_history"}


class RemoteClient(Protocol):
    """What RemoteEndpoints needs of a client (EndpointClient for one host; fakes in tests)."""

    async def probe(self, port: int) -> Probe: ...

    async def gpu(self, port: int) -> dict[str, Any]: ...

    async def set_preset(self, port: int, name: str) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


ClientFactory = Callable[[RemoteSpec], RemoteClient]


def default_client(spec: RemoteSpec) -> RemoteClient:
    return EndpointClient(host=spec.host, scheme=spec.url.split("://", 1)[0], api_key=spec.api_key)


@dataclass(frozen=True)
class RemotesChanged:
    """Fresh views of every remote endpoint and each box's GPUs, as (box label, snapshot)."""

    views: tuple[EndpointView, ...]
    gpus: tuple[tuple[str, GpuSnapshot], ...]


def snapshot_from_json(data: dict[str, Any]) -> GpuSnapshot:
    """GET /gpu's JSON (the local snapshot's field names) -> GpuSnapshot; unknown fields ignored."""
    gpus = []
    for item in data.get("gpus") or []:
        if isinstance(item, dict) and isinstance(item.get("index"), int):
            gpus.append(GpuSample(**{k: v for k, v in item.items() if k in _SAMPLE_FIELDS}))
    error = data.get("error")
    return GpuSnapshot(
        gpus=gpus,
        error=None if error is None else str(error),
        driver=data.get("driver"),
        taken_at=float(data.get("taken_at") or 0.0),
    )


class RemoteEndpoints:
    def __init__(self, specs: Sequence[RemoteSpec], client_factory: ClientFactory = default_client) -> None:
        self.specs = list(specs)
        self._factory = client_factory
        self._clients: dict[str, RemoteClient] = {}  # one per box (scheme://host)
        self._probes: dict[str, Probe] = {}  # by spec.name
        self._gpus: dict[str, GpuSnapshot] = {}  # by box label
        self._history: dict[tuple[str, int], tuple[deque[float], deque[float]]] = {}
        self.changes: Publisher[RemotesChanged] = Publisher()
        self._wake = asyncio.Event()
        self._closed = False

    @staticmethod
    def box(spec: RemoteSpec) -> str:
        return spec.url.rsplit(":", 1)[0]  # scheme://host: the machine whose GPUs /gpu reports

    def _client(self, spec: RemoteSpec) -> RemoteClient:
        box = self.box(spec)
        if box not in self._clients:
            self._clients[box] = self._factory(spec)
        return self._clients[box]

    def find(self, key: str) -> RemoteSpec | None:
        """The remote endpoint whose view key (host:port) is `key`."""
        return next((s for s in self.specs if s.name == key), None)

    # -- one polling round
    async def poll(self) -> None:
        if self._closed:
            return
        probes = await asyncio.gather(
            *(self._client(s).probe(s.port) for s in self.specs), return_exceptions=True
        )
        for spec, probe in zip(self.specs, probes, strict=True):
            if isinstance(probe, BaseException):
                probe = Probe(port=spec.port, error=f"{type(probe).__name__}: {probe}")
            self._probes[spec.name] = probe
        boxes: dict[str, RemoteSpec] = {}
        for spec in self.specs:  # one /gpu per box, from an endpoint of it that answered
            if self._probes[spec.name].ok:
                boxes.setdefault(self.box(spec), spec)
        answers = await asyncio.gather(
            *(self._client(s).gpu(s.port) for s in boxes.values()), return_exceptions=True
        )
        for (box, spec), answer in zip(boxes.items(), answers, strict=True):
            if isinstance(answer, BaseException):
                snap = GpuSnapshot(gpus=[], error=f"GET /gpu on {spec.name}: {_short(answer)}")
            else:
                snap = self._with_history(box, snapshot_from_json(answer))
            self._gpus[box] = snap
        if not self._closed:
            self.publish()

    def _with_history(self, box: str, snap: GpuSnapshot) -> GpuSnapshot:
        for g in snap.gpus:
            util, mem = self._history.setdefault(
                (box, g.index), (deque(maxlen=HISTORY), deque(maxlen=HISTORY))
            )
            if g.util is not None:
                util.append(g.util)
            if g.mem_percent is not None:
                mem.append(g.mem_percent)
            g.util_history, g.mem_history = list(util), list(mem)
        return snap

    def publish(self) -> None:
        self.changes.publish(RemotesChanged(tuple(self.views()), tuple(self.gpus())))

    def reachable(self, key: str) -> bool:
        """Whether the remote endpoint `key` (host:port) answered /health in the last round."""
        probe = self._probes.get(key)
        return probe is not None and probe.ok

    # -- what the UI shows
    def views(self) -> list[EndpointView]:
        return [self._view(spec, self._probes.get(spec.name)) for spec in self.specs]

    def gpus(self) -> list[tuple[str, GpuSnapshot]]:
        """(box label "host", snapshot) for every box polled so far, in the configured order."""
        out: dict[str, GpuSnapshot] = {}
        for spec in self.specs:
            snap = self._gpus.get(self.box(spec))
            if snap is not None:
                out.setdefault(spec.host, snap)
        return list(out.items())

    @staticmethod
    def _view(spec: RemoteSpec, probe: Probe | None) -> EndpointView:
        health = (probe.health if probe else None) or {}
        s = probe.summary if probe else StatsSummary()
        if probe is None:
            status, message = "starting", "remote: first probe pending"
        elif not probe.ok:
            status, message = "unhealthy", f"remote: not answering ({probe.error})"
        else:
            status = status_from_health(health, s).value  # nothing to restart on another box
            message = "remote" + (f": {health['message']}" if health.get("message") else "")
        return EndpointView(
            name=spec.name,
            port=spec.port,
            gpu=None,
            preset=str(health.get("preset") or "?"),
            status=status,
            pid=health.get("pid"),  # that box's pid
            uptime_s=s.uptime_s,
            restarts=0,
            **s.view_fields(),
            message=message,
            log_path="",  # the log lives on that box
            adopted=False,
            device=health.get("device"),
            progress=health.get("progress"),
            host=spec.host,
        )

    # -- actions
    async def set_preset(self, key: str, name: str) -> dict[str, Any]:
        """PUT /preset on the remote endpoint `key` (name may be a reference "text_mv_fast+iters=300")."""
        spec = self.find(key)
        if spec is None:
            raise EndpointError(f"no remote endpoint {key}")
        try:
            result = await self._client(spec).set_preset(spec.port, name)
        except EndpointError as exc:
            raise EndpointError(f"{spec.host}: {exc}") from None
        self.wake()
        return result

    # -- the loop
    def wake(self) -> None:
        self._wake.set()

    async def run(self, refresh: Callable[[], float]) -> None:
        """Poll every `refresh()` seconds (sooner after an action) until shutdown()."""
        while not self._closed:
            await self.poll()
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), refresh())

    async def shutdown(self) -> None:
        self._closed = True
        self.wake()
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)


def _short(exc: BaseException) -> str:
    text = str(exc)
    if "401" in text:
        return "HTTP 401 (API key missing or wrong)"
    return text or type(exc).__name__
