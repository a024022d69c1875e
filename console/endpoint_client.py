"""Async HTTP client for generation endpoints (GET /health, GET /stats, PUT /preset) over httpx.

No Textual, no torch. Short timeouts (a busy endpoint still answers /health at once; one that
does not is counted as a failed health check by the supervisor).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field, fields
from typing import Any

import httpx

HOST = "127.0.0.1"
TIMEOUT_S = 1.5
SWITCH_POLL_S = 0.5
SWITCH_TIMEOUT_S = 1800.0  # a cold compile of a new preset takes minutes on a GPU; never forever
# /health statuses (and the console's "busy") under which an endpoint takes generations;
# "warming": answering uncompiled while its compiled state builds (engine/service/runtime.py)
ANSWERING = ("ready", "busy", "warming")


class EndpointError(RuntimeError):
    """An endpoint refused or failed a request; the message is shown to the user."""


@dataclass
class StatsSummary:
    queue: int | None = None
    in_flight: int | None = None
    done: int | None = None
    failed: int | None = None
    last_s: float | None = None
    mean_s: float | None = None
    p95_s: float | None = None
    per_hour: float | None = None
    uptime_s: float | None = None
    max_batch: int | None = None  # jobs the endpoint runs at once (continuous batching)
    image_prompts: int | None = None  # image tasks refused (the preset generates from text)

    @property
    def busy(self) -> bool:
        """Something running or waiting (a "ready" endpoint with work is shown busy)."""
        return (self.in_flight or 0) > 0 or (self.queue or 0) > 0

    def view_fields(self) -> dict[str, Any]:
        """The counters an EndpointView shows as the endpoint reports them (uptime aside: a
        supervised endpoint's comes from its process)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "uptime_s"}


@dataclass
class Probe:
    port: int
    health: dict[str, Any] | None = None
    stats: dict[str, Any] | None = None
    error: str | None = None
    summary: StatsSummary = field(default_factory=StatsSummary)

    @property
    def ok(self) -> bool:
        return self.health is not None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def summarise_stats(stats: dict[str, Any] | None) -> StatsSummary:
    if not stats:
        return StatsSummary()
    requests = stats.get("requests") or {}
    recent = stats.get("recent") or []
    times = [float(r["time_s"]) for r in recent if isinstance(r, dict) and r.get("time_s") is not None]
    last = None
    if times:
        newest = max(
            (r for r in recent if isinstance(r, dict) and r.get("time_s") is not None),
            key=lambda r: r.get("finished_at") or 0,
        )
        last = float(newest["time_s"])
    per_hour = stats.get("throughput_per_hour")
    return StatsSummary(
        queue=stats.get("queue_depth"),
        in_flight=stats.get("in_flight"),
        done=requests.get("ok"),
        failed=requests.get("failed"),
        last_s=last,
        mean_s=sum(times) / len(times) if times else None,
        p95_s=percentile(times, 95),
        per_hour=None if per_hour is None else float(per_hour),
        uptime_s=stats.get("uptime_s"),
        max_batch=stats.get("max_batch"),
        image_prompts=requests.get("image_prompts"),
    )


class EndpointClient:
    """One host's endpoints. `api_key` (remote boxes) goes in every request's Authorization
    header and nowhere else: error messages name the host and port, never headers."""

    def __init__(
        self,
        host: str = HOST,
        timeout: float = TIMEOUT_S,
        transport: Any = None,
        scheme: str = "http",
        api_key: str | None = None,
    ) -> None:
        self.host = host
        self.scheme = scheme
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self._client = httpx.AsyncClient(
            timeout=timeout, transport=transport, trust_env=False, headers=headers
        )

    def url(self, port: int, path: str) -> str:
        return f"{self.scheme}://{self.host}:{port}{path}"

    async def gpu(self, port: int) -> dict[str, Any]:
        """GET /gpu: the endpoint's box's NVML telemetry (engine/service/gpu_telemetry.py)."""
        return await self._get_json(port, "/gpu")

    async def _get_json(self, port: int, path: str) -> dict[str, Any]:
        response = await self._client.get(self.url(port, path))
        response.raise_for_status()
        data = response.json()
        if not isinstance(data, dict):
            raise EndpointError(f"{path}: expected a JSON object")
        return data

    async def probe(self, port: int) -> Probe:
        health: dict[str, Any] | BaseException
        stats: dict[str, Any] | BaseException
        health, stats = await asyncio.gather(
            self._get_json(port, "/health"), self._get_json(port, "/stats"), return_exceptions=True
        )
        probe = Probe(port=port)
        if isinstance(health, BaseException):
            probe.error = _describe(health)
        else:
            probe.health = health
        if not isinstance(stats, BaseException):
            probe.stats = stats
            probe.summary = summarise_stats(stats)
        return probe

    async def set_preset(self, port: int, name: str) -> dict[str, Any]:
        """PUT /preset without waiting (202), then poll GET /preset/switch until the build ends:
        the switch record when the endpoint serves `name`; EndpointError with the endpoint's own
        one-line cause when it was refused or its build failed (it then serves its old preset)."""
        try:
            response = await self._client.put(
                self.url(port, "/preset"), json={"name": name, "wait": False}, timeout=30.0
            )
        except httpx.HTTPError as exc:
            raise EndpointError(f"port {port}: {_describe(exc)}") from exc
        if response.status_code >= 400:
            raise EndpointError(
                f"port {port}: preset {name!r} refused ({response.status_code}: {_error(response)})"
            )
        data = response.json()
        if response.status_code != 202 or not isinstance(data, dict):
            return data if isinstance(data, dict) else {}  # nothing to build (already serving it)
        deadline = time.monotonic() + SWITCH_TIMEOUT_S
        while data.get("state") == "building":
            if time.monotonic() > deadline:
                raise EndpointError(
                    f"port {port}: switch to {name!r} still building after {SWITCH_TIMEOUT_S:.0f}s"
                )
            await asyncio.sleep(SWITCH_POLL_S)
            try:
                data = await self._get_json(port, "/preset/switch")
            except (httpx.HTTPError, ValueError, EndpointError) as exc:
                raise EndpointError(f"port {port}: switch to {name!r}: {_describe(exc)}") from exc
        if data.get("state") != "done":
            raise EndpointError(f"port {port}: {data.get('error') or f'switch to {name!r} failed'}")
        return data

    async def aclose(self) -> None:
        await self._client.aclose()


def health_note(health: dict[str, Any]) -> str:
    """The endpoint's note from its /health: the start-up phase and its elapsed time while loading
    ("compiling 42s"), a switch being built beside the serving preset ("→ text_mv: compiling 8s")
    or, after a cold start on block packages, its whole models ("whole-model packages: compiling in
    helpers 30s"), else the endpoint's own message."""
    message = str(health.get("message") or "")
    switch = health.get("switch") if isinstance(health.get("switch"), dict) else None
    if switch and switch.get("state") == "building" and health.get("status") != "warming":
        phase = _phase(switch.get("phase"), switch.get("phase_elapsed_s"))
        if switch.get("kind") == "upgrade":  # after a cold start on block packages
            return f"whole-model packages: {phase}"
        return f"→ {switch.get('target')}: {phase}"
    if health.get("status") == "loading" and health.get("phase"):
        return f"{_phase(health.get('phase'), health.get('phase_elapsed_s'))}; {message}"
    if health.get("status") == "warming":  # the compiled state builds beside the serving one
        phase = _phase(switch.get("phase"), switch.get("phase_elapsed_s")) if switch else "compiling"
        return f"answering uncompiled; {phase}"
    return message


def _phase(name: Any, elapsed: Any) -> str:
    seconds = f" {float(elapsed):.0f}s" if isinstance(elapsed, int | float) else ""
    return f"{name or 'starting'}{seconds}"


def switch_summary(record: dict[str, Any]) -> str:
    """The toast's tail for a finished switch record, e.g. ' (models shared, built in 12.3s)';
    empty when nothing was built."""
    if "elapsed_s" not in record:
        return ""
    models = "loaded beside the old ones" if record.get("reloaded") else "shared"
    return f" (models {models}, built in {float(record['elapsed_s']):.1f}s)"


def _error(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error") or response.text)
    except (ValueError, AttributeError):
        return response.text


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
