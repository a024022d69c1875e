"""`gen404-console --once [--json]`: one snapshot of GPUs and endpoints, for scripts and cron.

Probes the configured ports plus those in the state file (endpoints a console left running),
and other boxes' endpoints (`--endpoint http://HOST:PORT`, marked "remote", their GPUs under
"remote_gpus"); spawns nothing. Exit status 0 when every probed endpoint answered /health, else 1.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from console import alerts, paths
from console.config import ConsoleConfig, RemoteSpec
from console.endpoint_client import EndpointClient, Probe
from console.gpu import GpuSnapshot, NvmlSampler
from console.remote import RemoteEndpoints
from console.supervisor import EndpointView, Prober, proc_alive, read_state
from console.widgets.fmt import count, gib, num, rate, seconds, uptime


async def probe_ports(ports: list[int], prober: Prober | None = None) -> list[Probe]:
    client = prober or EndpointClient()
    try:
        return list(await asyncio.gather(*(client.probe(p) for p in ports)))
    finally:
        if prober is None and isinstance(client, EndpointClient):
            await client.aclose()


def collect(
    config: ConsoleConfig, sampler: NvmlSampler | None = None, prober: Prober | None = None
) -> dict[str, Any]:
    sampler = sampler or NvmlSampler()
    gpus: GpuSnapshot = sampler.sample()
    sampler.close()
    state = {int(i["port"]): i for i in read_state(paths.state_file())}
    ports = sorted({s.port for s in config.endpoints} | set(state))
    probes = asyncio.run(probe_ports(ports, prober))
    endpoints = []
    facts = []  # what the alerts read of each endpoint
    for probe in probes:
        item = state.get(probe.port)
        pid = None
        if item and proc_alive(int(item["pid"]), item.get("start_ticks")):
            pid = int(item["pid"])
        health = probe.health or {}
        s = probe.summary
        status = str(health.get("status", "down")) if probe.ok else "down"
        facts.append(alerts.EndpointFacts(f"gen-{probe.port}", status, s.last_s))
        endpoints.append(
            {
                "name": f"gen-{probe.port}",
                "port": probe.port,
                "status": status,
                "preset": health.get("preset"),
                "device": health.get("device"),
                "pid": pid if pid is not None else health.get("pid"),
                "adopted": pid is not None,
                "error": probe.error,
                "uptime_s": s.uptime_s,
                "queue": s.queue,
                "in_flight": s.in_flight,
                "done": s.done,
                "failed": s.failed,
                "last_s": s.last_s,
                "mean_s": s.mean_s,
                "p95_s": s.p95_s,
                "per_hour": s.per_hour,
            }
        )
    data: dict[str, Any] = {"gpus": gpus.to_dict(), "endpoints": endpoints}
    boxes: list[tuple[str, GpuSnapshot]] = []
    if config.remotes:
        views, boxes, reachable = asyncio.run(poll_remotes(config.remotes))
        for v in views:
            status = v.status if reachable[v.key] else "down"
            facts.append(alerts.EndpointFacts(v.name, status, v.last_s))
            endpoints.append(
                {
                    "name": v.name,
                    "port": v.port,
                    "host": v.host,
                    "remote": True,
                    "status": status,
                    "preset": v.preset,
                    "device": v.device,
                    "pid": v.pid,  # on that box
                    "adopted": False,
                    "error": None if reachable[v.key] else v.message,
                    "uptime_s": v.uptime_s,
                    "queue": v.queue,
                    "in_flight": v.in_flight,
                    "done": v.done,
                    "failed": v.failed,
                    "last_s": v.last_s,
                    "mean_s": v.mean_s,
                    "p95_s": v.p95_s,
                    "per_hour": v.per_hour,
                }
            )
        data["remote_gpus"] = [{"host": host, **snap.to_dict()} for host, snap in boxes]
    found = alerts.collect(gpus, facts, remote_gpus=boxes)
    data["alerts"] = [a.to_dict() for a in found]
    return data


async def poll_remotes(
    specs: list[RemoteSpec],
) -> tuple[list[EndpointView], list[tuple[str, GpuSnapshot]], dict[str, bool]]:
    """One round over other boxes' endpoints: their views, their boxes' GPUs, who answered."""
    remotes = RemoteEndpoints(specs)
    try:
        await remotes.poll()
        views = remotes.views()
        return views, remotes.gpus(), {v.key: remotes.reachable(v.key) for v in views}
    finally:
        await remotes.shutdown()


def format_text(data: dict[str, Any]) -> str:
    lines: list[str] = []
    g = data["gpus"]
    if g.get("error"):
        lines.append(f"GPUs: {g['error']}")
    for box in data.get("remote_gpus", []):
        if box.get("error"):
            lines.append(f"box {box['host']} GPUs: {box['error']}")
    remote = [{**gpu, "box": box["host"]} for box in data.get("remote_gpus", []) for gpu in box["gpus"]]
    for gpu in [*g.get("gpus", []), *remote]:
        mem = f"{gib(gpu['mem_used'])}/{gib(gpu['mem_total'])} GiB"
        events = gpu["clock_events"]
        ev = "N/A" if events is None else (",".join(events) or "none")
        where = f"box {gpu['box']} " if "box" in gpu else ""
        lines.append(
            f"{where}GPU{gpu['index']} {gpu['name'] or 'N/A'}  util {num(gpu['util'], unit='%')}  mem {mem}  "
            f"{num(gpu['temp'], unit='C')}  {num(gpu['power'])}/{num(gpu['power_limit'], unit='W')}  "
            f"SM {num(gpu['sm_clock'], unit='MHz')}  fan {num(gpu['fan'], unit='%')}  clocks {ev}"
        )
    header = (
        "name",
        "port",
        "status",
        "preset",
        "pid",
        "uptime",
        "queue",
        "done",
        "failed",
        "last",
        "mean",
        "p95",
        "/hour",
    )
    rows = [header]
    for e in data["endpoints"]:
        rows.append(
            (
                e["name"],
                str(e["port"]),
                e["status"],
                e["preset"] or "-",
                count(e["pid"]),
                uptime(e["uptime_s"]),
                count(e["queue"]),
                count(e["done"]),
                count(e["failed"]),
                seconds(e["last_s"]),
                seconds(e["mean_s"]),
                seconds(e["p95_s"]),
                rate(e["per_hour"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    for a in data.get("alerts", []):
        lines.append(f"ALERT {a['source']}: {a['text']}")
    return "\n".join(lines)


def run_once(
    config: ConsoleConfig,
    as_json: bool = False,
    sampler: NvmlSampler | None = None,
    prober: Prober | None = None,
) -> int:
    data = collect(config, sampler, prober)
    print(json.dumps(data, indent=2) if as_json else format_text(data))
    return 0 if all(e["status"] != "down" for e in data["endpoints"]) else 1
