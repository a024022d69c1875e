"""Endpoint life cycle on one machine: first start, warm restart, crash under the supervisor, switch.

Four measurements, each with real `gen404 serve` processes on 127.0.0.1 (issue 16's acceptance):
  1. first start on a "fresh box": empty warm cache, empty inductor and Triton caches; launch
     until it answers (a request sent as soon as /health says "warming": the preset uncompiled,
     its compiled state building beside it) and until /health "ready" (compiled), with /health's
     phase breakdown of both builds, then the first request at full speed;
  2. second start with what the first one saved under the state dir (its warm cache or AOT
     packages; inductor and Triton caches empty again, so only gen404's own files help): the
     same figures;
  3. the console's Supervisor runs an endpoint, with the console's launcher (restarts forked from
     the preloaded fork server, console/supervisor/zygote.py); it gets SIGKILL; seconds until the
     restarted endpoint answers a request, and until it is ready;
  4. preset switches on that endpoint while a client sends requests back to back: PUT /preset
     preset -> alt (alt's cache cold), alt -> preset and preset -> alt (warm): how long each
     build took, the longest any request waited meanwhile against one generation of the old
     preset, and the first request after the switch against the new preset's steady state.
Prints a table naming the machine; writes bench_restart.json to --out (default $OUT or /tmp).

GPU (H200, repo root, < 8 min; gsplat's one-off build is restored/done first so it is not counted):
    source benchmarks/gpu_env.sh restart && gsplat_restore && gsplat_build && \
      timeout 540 python3 -m benchmarks.bench_restart --device cuda --out "$OUT" 2>&1 | tee -a "$LOG"
The crash alone, in a short call: `--parts sigkill --kill-when answering` kills the first start
as soon as it answers (warming), so no cold compile is waited for; figures are printed as they
are measured, and a run stopped by `timeout` (SIGTERM) still writes what it has. The presets run
their own compile_backend (the text_mv presets: aot packages); torch.compile at every start
instead: `--compile-backend jit`.
CPU check of the script itself (tiny presets, ~1 min on a shared 2-core box):
    python -m benchmarks.bench_restart --cpu-smoke [--cpu-compile]
On a CPU the warm cache saves inductor's graphs (FX and AOTAutograd cache hits in the next
process) but the C++ kernels are compiled again from their source (a CPU box, a 64x64 module:
40.3 s cold, 32.6 s with the cache), so --cpu-compile checks the mechanism, not the speed; on
CUDA the Triton kernels travel inside the artefacts.

Full-size random weights: the presets are run as copies with `weights: random` (written to a
private GEN404_PRESETS_DIR), which is what `serve --random-weights` builds, and which the console's
supervisor (it passes no --random-weights) can start too; the warm cache keys on that field.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from benchmarks.machine import cpu_model
from engine.service.runtime import SERVING as ANSWERING  # /health statuses that take generations

PROMPT = "a red wooden chair"
SMOKE_PRESETS = {  # --cpu-smoke: same models, two shapes, quick steps (--cpu-compile: compiled too)
    "bench_a": "extends: smoke\niters: 3\nnum_pts: 200\nmax_gaussians: 400\nrender_size: 16\nref_size: 16\n"
    "densification_interval: 100\ndensity_start_iter: 100\ndensity_end_iter: 100\n",
    "bench_b": "extends: bench_a\nguidance_scale: 30\nrender_size: 24\nref_size: 24\n",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def machine_name(device: str) -> str:
    """The GPU's name (or the CPU's) and the torch installed, for the figures' header."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        torch = f"torch {version('torch')}"
    except PackageNotFoundError:
        torch = "torch not installed"
    if device == "cuda":
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            if out.stdout.strip():
                return f"{out.stdout.strip().splitlines()[0]}, {torch}"
    return f"CPU: {cpu_model()} ({os.cpu_count()} cores), {torch}"


def random_weight_presets(names: list[str], directory: Path, overrides: dict[str, str] | None = None) -> None:
    """Copies of bundled presets with `weights: random` (and each of `overrides`, e.g.
    compile_backend) under their own names (user dir wins); the rest as the preset has it."""
    from engine.presets import bundled_dir

    directory.mkdir(parents=True, exist_ok=True)
    fields = {"weights": "random", **(overrides or {})}
    replaced = tuple(f"{key}:" for key in fields)
    extra = "".join(f"{key}: {value}\n" for key, value in fields.items())
    for name in names:
        text = (bundled_dir() / f"{name}.yaml").read_text()
        lines = [line for line in text.splitlines() if not line.startswith(replaced)]
        (directory / f"{name}.yaml").write_text("\n".join(lines) + "\n" + extra)


def serve_argv(port: int, preset: str, device: str, extra: tuple[str, ...] = ()) -> list[str]:
    head = [sys.executable, "-c", "import sys; from engine.cli import main; sys.exit(main())"]
    return [
        *head,
        "serve",
        "--port",
        str(port),
        "--preset",
        preset,
        "--device",
        device,
        "--host",
        "127.0.0.1",
        *extra,
    ]


def fresh_compiler_caches(root: Path, tag: str) -> None:
    """Point inductor and Triton at empty directories (what a fresh box has)."""
    for var, sub in (("TORCHINDUCTOR_CACHE_DIR", "inductor"), ("TRITON_CACHE_DIR", "triton")):
        path = root / f"{tag}-{sub}"
        path.mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(path)


def health(port: int, timeout: float = 2.0) -> dict[str, Any] | None:
    try:
        data = httpx.get(f"http://127.0.0.1:{port}/health", timeout=timeout).json()
    except (httpx.HTTPError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def poll_health(
    port: int,
    deadline: float,
    proc: subprocess.Popen | None,
    done: Callable[[dict[str, Any]], bool],
    waiting_for: str,
) -> dict[str, Any]:
    """Poll /health every 0.1 s until `done(health)`; the last health seen, with a "bench_error"
    when the process exited, the endpoint reported an error or `deadline` passed."""
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return {**last, "bench_error": f"exited with {proc.returncode}"}
        info = health(port)
        if info:
            last = info
            if done(info):
                return info
            if info.get("status") == "error":
                return {**info, "bench_error": info.get("message")}
        time.sleep(0.1)
    return {**last, "bench_error": f"timed out waiting for {waiting_for}"}


def wait_ready(
    port: int, deadline: float, proc: subprocess.Popen | None = None, until: tuple[str, ...] = ("ready",)
) -> dict[str, Any]:
    """Poll /health until its status is in `until` (poll_health)."""
    return poll_health(port, deadline, proc, lambda h: h.get("status") in until, "/".join(until))


def wait_switch_built(
    port: int, deadline: float, proc: subprocess.Popen | None = None
) -> dict[str, Any] | None:
    """None when no build runs beside the serving preset; else poll until it ends (poll_health)."""
    if ((health(port) or {}).get("switch") or {}).get("state") != "building":
        return None

    def built(info: dict[str, Any]) -> bool:
        return (info.get("switch") or {}).get("state") != "building"

    return poll_health(port, deadline, proc, built, "the build beside it")


def put_preset(port: int, target: str, budget_s: float) -> dict[str, Any]:
    """PUT /preset `target` and wait for its build: the answer's status and body, and seconds."""
    started = time.monotonic()
    try:
        response = httpx.put(
            f"http://127.0.0.1:{port}/preset", json={"name": target, "wait": True}, timeout=budget_s
        )
        status: int | None = response.status_code
        body: Any = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        status, body = None, f"{type(exc).__name__}: {exc}"
    return {"target": target, "status": status, "body": body, "seconds": time.monotonic() - started}


def start_run(out_arg: str, prefix: str) -> tuple[Path, Path]:
    """The output directory (made) and a private work directory. `timeout` stops a run with
    SIGTERM: it then exits through `finally`, so the measured part is written."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    out = Path(out_arg)
    out.mkdir(parents=True, exist_ok=True)
    return out, Path(tempfile.mkdtemp(prefix=prefix))


def use_private_dirs(work: Path, presets_dir: Path) -> None:
    """This run's presets, and a state dir (warm cache, AOT packages) of its own under `work`."""
    os.environ["GEN404_PRESETS_DIR"] = str(presets_dir)
    os.environ["GEN404_STATE_DIR"] = str(work / "state")  # the warm cache lives here
    os.environ.pop("GEN404_WARM_CACHE_DIR", None)


def finish_run(
    results: dict[str, Any],
    began: float,
    out: Path,
    name: str,
    report: str,
    log: Path,
    work: Path,
    keep: bool,
) -> None:
    """The end of a run, interrupted or not: the JSON (`out`/`name`.json), the table, and the
    private work dir kept or removed."""
    results["total_s"] = time.monotonic() - began
    (out / f"{name}.json").write_text(json.dumps(results, indent=1, default=str))
    print("\n" + report)
    print(f"total {results['total_s']:.0f}s; JSON: {out / f'{name}.json'}; serve log: {log}")
    if keep:
        print(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


def build_record(info: dict[str, Any], field: str) -> dict[str, Any] | None:
    """One field of /health's record of the compiled state's build beside the serving one
    (serving early), if any: "phases", or "compile" (what torch.compile did: caches, seconds)."""
    switch = info.get("switch")
    return switch.get(field) if isinstance(switch, dict) else None


def request(port: int, timeout: float = 600.0) -> dict[str, Any]:
    started = time.monotonic()
    try:
        response = httpx.post(f"http://127.0.0.1:{port}/generate/", data={"prompt": PROMPT}, timeout=timeout)
    except httpx.HTTPError as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "wall_s": time.monotonic() - started}
    wall = time.monotonic() - started
    if response.status_code != 200:
        return {"ok": False, "error": f"HTTP {response.status_code}: {response.text[:200]}", "wall_s": wall}
    gen = float(response.headers.get("x-generation-time", "nan"))
    return {
        "ok": True,
        "wall_s": wall,
        "generation_s": gen,
        "queue_s": float(response.headers.get("x-queue-time", "nan")),
        "preset": response.headers.get("x-preset"),
        "bytes": len(response.content),
    }


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def timed_start(
    preset: str, device: str, log: Path, budget_s: float, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Launch `gen404 serve`; seconds from launch until it answers (a request sent as soon as
    /health says warming or ready, and its wall time), then until /health says ready, and two
    requests then; stop it."""
    port = free_port()
    launched = time.monotonic()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            serve_argv(port, preset, device, extra),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        first = wait_ready(port, launched + budget_s, proc, until=ANSWERING)
        result: dict[str, Any] = {
            "answering_status": first.get("status"),
            "start_phases": first.get("phases"),
        }
        if "bench_error" not in first:
            result["serving_s"] = time.monotonic() - launched
            result["early_request"] = request(port)
            result["answered_s"] = time.monotonic() - launched
        info = wait_ready(port, launched + budget_s, proc)
        ready_s = time.monotonic() - launched if "bench_error" not in info else None
        if first.get("status") == "ready" and "serving_s" in result:
            ready_s = result["serving_s"]  # ready when it first answered: not after that request
        result.update(
            {
                "ready_s": ready_s,
                "phases": info.get("phases"),
                "compile_phases": build_record(info, "phases"),
                "compile": build_record(info, "compile"),
                "cache": info.get("cache"),
                "message": info.get("message"),
                "error": info.get("bench_error"),
            }
        )
        if result["ready_s"] is not None:
            result["first_request"] = request(port)
            result["second_request"] = request(port)
            # a start that served block packages swaps the whole-model ones in after (runtime.py's
            # bridge): wait for that, so a later start finds what a finished first start leaves
            upgraded = wait_switch_built(port, launched + budget_s, proc)
            if upgraded is not None:
                result["upgraded_s"] = time.monotonic() - launched if "bench_error" not in upgraded else None
                result["upgrade_phases"] = build_record(upgraded, "phases")
                result["upgrade_error"] = upgraded.get("bench_error") or (upgraded.get("switch") or {}).get(
                    "error"
                )
                result["upgraded_request"] = request(port)
        return result
    finally:
        stop(proc)


# ------------------------------------------------------------------- the console's supervisor


async def supervised_crash(
    preset: str,
    log_dir: Path,
    budget_s: float,
    result: dict[str, Any],
    after: Callable[[int], dict[str, Any]] | None = None,
    kill_when: tuple[str, ...] = ("ready",),
) -> dict[str, Any]:
    """The console's real Supervisor runs one endpoint; SIGKILL it once /health says one of
    `kill_when`; time until it answers again. Figures go into `result` (and are printed) as they
    are measured, so a run cut short keeps them. `after(port)` then runs on the restarted
    endpoint (the switches: one start fewer to pay)."""
    from console.config import EndpointSpec
    from console.endpoint_client import EndpointClient
    from console.supervisor import Supervisor
    from console.supervisor.zygote import preloaded_launcher

    client = EndpointClient()
    launcher = preloaded_launcher(log_dir)  # as the console does: restarts fork from a preloaded parent
    supervisor = Supervisor(log_dir, None, client, launcher=launcher)
    task = asyncio.ensure_future(supervisor.run(lambda: 0.25))
    port = free_port()
    result["port"] = port
    loop = asyncio.get_running_loop()

    def note(key: str, value: Any) -> None:
        result[key] = value
        print(f"  sigkill: {key} = {fmt(value)}", flush=True)

    try:
        supervisor.add(EndpointSpec(port, preset))
        started = time.monotonic()
        info = await loop.run_in_executor(None, wait_ready, port, started + budget_s, None, kill_when)
        if "bench_error" in info:
            return {**result, "error": f"first start: {info['bench_error']}"}
        note("first_ready_s" if kill_when == ("ready",) else "first_answering_s", time.monotonic() - started)
        result["killed_while"] = info.get("status")
        await loop.run_in_executor(None, request, port)  # a generation before the crash, as in mining
        pid = int(info["pid"])
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        deadline = killed + budget_s
        while time.monotonic() < deadline:  # the new process, answering (warming or ready)
            info = await loop.run_in_executor(None, wait_ready, port, deadline, None, ANSWERING)
            if info.get("pid") not in (None, pid) or "bench_error" in info:
                break
            await asyncio.sleep(0.1)
        if "bench_error" in info:
            return {**result, "error": f"after SIGKILL: {info['bench_error']}"}
        note("serving_after_kill_s", time.monotonic() - killed)
        result["serving_status"] = info.get("status")
        answer = await loop.run_in_executor(None, request, port)
        note("answering_after_kill_s", time.monotonic() - killed)
        result["request_after_kill"] = answer
        info = await loop.run_in_executor(None, wait_ready, port, deadline)
        if "bench_error" in info:
            return {**result, "error": f"after SIGKILL, to ready: {info['bench_error']}"}
        ready_after = time.monotonic() - killed
        if result["serving_status"] == "ready":  # ready when it first answered, not after that request
            ready_after = result["serving_after_kill_s"]
        note("ready_after_kill_s", ready_after)
        result["compile_phases_after_kill"] = build_record(info, "phases")
        result["compile_after_kill"] = build_record(info, "compile")
        result["phases_after_kill"] = info.get("phases")
        result["cache_after_kill"] = info.get("cache")
        result["restarts"] = supervisor.endpoints[port].restarts
        result["forked_starts"] = launcher.forked  # starts that skipped the imports
        result["fork_server"] = launcher.zygote.ready_info
        if after is not None:
            result["after"] = await loop.run_in_executor(None, after, port)
            # a switch must never make the supervisor think the endpoint died (health probes)
            result["after"]["supervisor_restarts"] = supervisor.endpoints[port].restarts - result["restarts"]
        return result
    finally:
        await supervisor.shutdown(stop_endpoints=True)
        launcher.close()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await client.aclose()


# ------------------------------------------------------------------- switches under load


def switch_under_load(port: int, target: str, budget_s: float) -> dict[str, Any]:
    """PUT /preset (waiting for the build) while a client sends requests back to back."""
    done = threading.Event()
    log: list[dict[str, Any]] = []
    t0 = time.monotonic()

    def client() -> None:
        extra_after_switch = 3  # the first requests on the new preset, for its steady state
        while extra_after_switch > 0 and time.monotonic() < t0 + budget_s:
            sent = time.monotonic() - t0
            answer = request(port)
            answer["sent_s"], answer["during_switch"] = sent, not done.is_set()
            log.append(answer)
            if done.is_set():
                extra_after_switch -= 1

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    time.sleep(0.5)  # the client is mid-generation when the switch starts
    answer = put_preset(port, target, budget_s)
    done.set()
    thread.join(budget_s)
    switch_info = (health(port) or {}).get("switch")
    during = [r for r in log if r.get("during_switch") and r.get("ok")]
    old_gen = [r["generation_s"] for r in log if r.get("ok") and r["preset"] != target]
    after = [r for r in log if not r.get("during_switch") and r.get("ok") and r["preset"] == target]
    return {
        "target": target,
        "put": answer,
        "switch_s": answer["seconds"],
        "build_phases": (switch_info or {}).get("phases"),
        "build_note": (switch_info or {}).get("note"),  # e.g. built on the generation thread
        "requests_during": len(during),
        "failed_requests": sum(1 for r in log if not r.get("ok")),
        # X-Queue-Time: what the endpoint itself held the request before its generation started
        "max_wait_during_s": max((r["queue_s"] for r in during), default=None),
        "max_wall_during_s": max((r["wall_s"] for r in during), default=None),
        "old_generation_s": min(old_gen, default=None),
        "first_after_s": after[0]["generation_s"] if after else None,
        "steady_after_s": min((r["generation_s"] for r in after[1:]), default=None),
        "log": log,
    }


def switches(port: int, preset: str, alt: str, budget_s: float) -> dict[str, Any]:
    """preset -> alt (alt never compiled here: its cache is cold), alt -> preset, preset -> alt."""
    started = time.monotonic()
    request(port)  # steady state before the switches
    runs = []
    for label, target in (("cold", alt), ("warm", preset), ("warm", alt)):
        left = budget_s - (time.monotonic() - started)
        if left < 30:
            runs.append({"target": target, "skipped": "time budget"})
            continue
        runs.append({"cache": label, **switch_under_load(port, target, left)})
    return {"runs": runs}


# ------------------------------------------------------------------- report


def fmt(value: Any, unit: str = "s") -> str:
    return "n/a" if value is None else f"{value:.2f} {unit}" if isinstance(value, float) else str(value)


def second_key(n: int) -> str:
    """The n-th second start's key (a start with the first start's state on disk): second_start,
    second_start_2, ..."""
    return "second_start" if n == 1 else f"second_start_{n}"


def table(results: dict[str, Any]) -> str:
    rows = [f"machine: {results['machine']}; preset {results['preset']}, alt {results['alt']}"]
    repeats = sorted(k for k in results if k.startswith("second_start_"))
    for key in ("first_start", "second_start", *repeats, "first_alone"):
        if key == "first_alone" and key not in results:
            continue
        r = results.get(key) or {}
        first = (r.get("first_request") or {}).get("generation_s")
        phases = ", ".join(
            f"{k} {v:.1f}s" for k, v in {**(r.get("phases") or {}), **(r.get("compile_phases") or {})}.items()
        )
        cache = (r.get("cache") or {}).get("state")
        early = r.get("early_request") or {}
        rows.append(
            f"{key:<13} answering {fmt(r.get('serving_s'))} ({r.get('answering_status')}; its request"
            f" {fmt(early.get('wall_s'))}, preset {early.get('preset')})"
            f"; ready {fmt(r.get('ready_s'))} (first request {fmt(first)}; cache {cache}) [{phases}]"
            + (f" ERROR {r['error']}" if r.get("error") else "")
            + (f" WITH {r['env']}" if r.get("env") else "")
        )
        if "upgraded_s" in r:  # block packages first, then the whole models (runtime.py's bridge)
            up = ", ".join(f"{k} {v:.1f}s" for k, v in (r.get("upgrade_phases") or {}).items())
            rows.append(
                f"{'':<13} whole-model packages in at {fmt(r.get('upgraded_s'))} (request then"
                f" {fmt((r.get('upgraded_request') or {}).get('generation_s'))}) [{up}]"
                + (f" ERROR {r['upgrade_error']}" if r.get("upgrade_error") else "")
            )
    c = results.get("sigkill") or {}
    rows.append(
        f"{'sigkill':<13} answering again {fmt(c.get('answering_after_kill_s'))} after SIGKILL"
        f" ({c.get('serving_status')} at {fmt(c.get('serving_after_kill_s'))}, its request"
        f" {fmt((c.get('request_after_kill') or {}).get('wall_s'))}; ready {fmt(c.get('ready_after_kill_s'))};"
        f" restarts {c.get('restarts')}, forked {c.get('forked_starts')}; fork server"
        f" {json.dumps({k: v for k, v in (c.get('fork_server') or {}).items() if k != 'modules'})})"
        + (f" ERROR {c['error']}" if c.get("error") else "")
    )
    for run in (results.get("switch") or {}).get("runs", []):
        if "skipped" in run:
            rows.append(f"switch -> {run['target']}: skipped ({run['skipped']})")
            continue
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in (run.get("build_phases") or {}).items())
        rows.append(
            f"switch -> {run['target']} ({run['cache']} cache): PUT {run['put']['status']} in"
            f" {fmt(run['switch_s'])}; {run['requests_during']} requests during, longest wait"
            f" {fmt(run['max_wait_during_s'])} (one old generation {fmt(run['old_generation_s'])});"
            f" first after {fmt(run['first_after_s'])} vs steady {fmt(run['steady_after_s'])};"
            f" failed {run['failed_requests']} [{phases}]"
            + (f" NOTE {run['build_note']}" if run.get("build_note") else "")
        )
    if "supervisor_restarts" in (results.get("switch") or {}):
        rows.append(f"supervisor restarts during the switches: {results['switch']['supervisor_restarts']}")
    if (results.get("switch") or {}).get("error"):
        rows.append(f"switch: ERROR {results['switch']['error']}")
    return "\n".join(rows)


@contextlib.contextmanager
def environment(setting: str | None) -> Iterator[None]:
    """NAME=VALUE set for the starts launched inside, the old value back after (None: the
    environment as it is)."""
    if setting is None:
        yield
        return
    name, _, value = setting.partition("=")
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def run_all(
    args: argparse.Namespace, results: dict[str, Any], work: Path, log: Path, budget: Callable[[float], float]
) -> None:
    parts = set(args.parts.split(","))
    fresh_compiler_caches(work, "first")
    if "starts" in parts:
        results["first_start"] = timed_start(args.preset, args.device, log, budget(args.phase_budget))
        print(table({**results}), flush=True)
        for n in range(1, args.second_starts + 1):
            fresh_compiler_caches(work, f"second{n}")  # only gen404's warm cache is left from the first start
            variant = args.alternate_env if n % 2 == 0 else None  # side by side: even starts with it
            with environment(variant):
                results[second_key(n)] = timed_start(args.preset, args.device, log, budget(args.phase_budget))
            results[second_key(n)]["env"] = variant
            print(table({**results}), flush=True)
    if "first-alone" in parts:  # the control: a first start that compiles in its own process only
        fresh_compiler_caches(work, "alone")
        with environment(f"GEN404_STATE_DIR={work / 'state-alone'}"):  # no warm cache either
            results["first_alone"] = timed_start(
                args.preset, args.device, log, budget(args.phase_budget), ("--no-compile-helpers",)
            )
        print(table({**results}), flush=True)
    if "sigkill" not in parts:
        return
    crash_budget = budget(args.phase_budget)

    def then_switch(port: int) -> dict[str, Any]:  # on the supervised endpoint, once it is back
        return switches(port, args.preset, args.alt, budget(args.phase_budget * 2))

    after = then_switch if "switches" in parts else None
    kill_when = ("ready",) if args.kill_when == "ready" else ANSWERING
    crash = results["sigkill"] = {}
    results["sigkill"] = asyncio.run(
        supervised_crash(args.preset, work / "logs", crash_budget, crash, after, kill_when)
    )
    if after is not None:
        results["switch"] = results["sigkill"].pop("after", None) or {
            "error": "not run: the supervised endpoint failed"
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="text_mv_fast")
    ap.add_argument("--alt", default="text_mv_ultra_fast", help="the preset to switch to and back")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny CPU presets: checks the script itself")
    ap.add_argument(
        "--cpu-compile",
        action="store_true",
        help="with --cpu-smoke: compile them (inductor's C++ backend; minutes per cold start on a small CPU)",
    )
    ap.add_argument("--out", default=os.environ.get("OUT") or tempfile.gettempdir())
    ap.add_argument("--phase-budget", type=float, default=240.0, help="seconds any one part may take")
    ap.add_argument("--keep", action="store_true", help="keep the private state and compiler caches")
    ap.add_argument(
        "--parts",
        default="starts,sigkill,switches",
        help="which parts run: starts (first and second), first-alone (a first start that compiles"
        " without helper processes, the control), sigkill, switches (on the endpoint sigkill"
        " restarted; needs sigkill). `--parts sigkill` fits the crash measurement into one short call",
    )
    ap.add_argument(
        "--second-starts", type=int, default=1, help="starts: how many second starts, one after another"
    )
    ap.add_argument(
        "--alternate-env",
        metavar="NAME=VALUE",
        help="starts: every second second start runs with this variable set (a side-by-side control)",
    )
    ap.add_argument(
        "--kill-when",
        choices=("ready", "answering"),
        default="ready",
        help="sigkill: kill the first start once ready (compiled), or as soon as it answers"
        " (warming: a shorter call that skips the first compile)",
    )
    ap.add_argument(
        "--compile-backend",
        choices=("preset", "jit", "aot"),
        default="preset",
        help="the presets' compile_backend (preset: their own; jit: torch.compile each start; aot:"
        " packages compiled once, loaded by later starts)",
    )
    ap.add_argument(
        "--compile-regions",
        action="store_true",
        help="aot: the UNet and VAE encoder block by block, their cold compile split between helpers"
        " (compile_regions)",
    )
    ap.add_argument(
        "--deadline",
        type=float,
        default=470.0,
        help="seconds for everything: later parts are cut short or skipped",
    )
    args = ap.parse_args()
    out, work = start_run(args.out, "gen404-restart-")
    presets_dir = work / "presets"
    if args.cpu_smoke:
        args.preset, args.alt, args.device = "bench_a", "bench_b", "cpu"
        presets_dir.mkdir(parents=True)
        for name, text in SMOKE_PRESETS.items():
            compiled = "compile: true\n" if args.cpu_compile and name == "bench_a" else ""
            (presets_dir / f"{name}.yaml").write_text(text + compiled)
    else:
        overrides = {} if args.compile_backend == "preset" else {"compile_backend": args.compile_backend}
        if args.compile_regions:
            overrides["compile_regions"] = "true"
        random_weight_presets([args.preset, args.alt], presets_dir, overrides)
    use_private_dirs(work, presets_dir)
    log = out / "bench_restart_serve.log"

    results: dict[str, Any] = {
        "machine": machine_name(args.device),
        "preset": args.preset,
        "alt": args.alt,
        "device": args.device,
        "compile_regions": args.compile_regions,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    began = time.monotonic()

    def budget(most: float) -> float:
        return max(0.0, min(most, args.deadline - (time.monotonic() - began)))

    try:
        run_all(args, results, work, log, budget)
    finally:  # whatever was measured is kept, even when a part raised or the run was interrupted
        finish_run(results, began, out, "bench_restart", table(results), log, work, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
