"""Many prompts at once on one GPU: the batched endpoint against one-at-a-time and N processes.

For each count of simultaneous requests (default 1, 2, 4, 8), three setups side by side, each a
real `gen404 serve` subprocess (or four) on loopback, fed over real HTTP the miner's way:
  serial   one endpoint, max_batch 1 (today: one generation at a time, the rest wait in its queue)
  batched  one endpoint, max_batch 8 (continuous batching: all share every SDS step)
  procs    4 endpoints on the same GPU (the seed guide's way), request k sent to endpoint k % 4
Per setup and count: gens/hour (answers / wall time from first send to last answer), p50 / p95 /
max latency (client round trip), how many PLYs pass the validator gate, and per setup peak GPU
memory (the GPU's used memory above the idle baseline, sampled with nvidia-smi, and the sum of
torch's peak allocation from each endpoint's /stats). Then, in this process, a per-stage profile
of the batched step for 1, 4 and 8 jobs (synchronised stage times, ms a step) with the VAE
encoder's fwd+bwd and the CFG UNet timed alone at each bucket.

Presets: every setup runs the named preset through a temporary user preset that only sets
max_batch (and, unless --compile, `compile: false`: each endpoint would otherwise compile at
warm-up, 45-130 s per process and per batch bucket, which does not fit one device call; all
setups then run uncompiled, so the comparison stays like for like).

GPU (repo root, wheels installed; ~5-6 min for text_mv_fast):
    bash benchmarks/gpu_concurrency.sh
CPU dev box (tiny models; checks the script, not the GPU figures):
    python -m benchmarks.bench_concurrency --smoke
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import ServerProcess, running_server

PROMPTS = [
    "a red sports car",
    "a wooden chair",
    "a ceramic teapot with blue flowers",
    "a small robot",
    "a green dragon statue",
    "a leather armchair",
    "a vintage camera",
    "a potted cactus",
]
SETUPS = ("serial", "batched", "procs")
PROCS = 4
# The VAE encoder's arithmetic (forward + input gradient), the estimate: ~0.55 TFLOP a step
# for 4 views at 128 px, i.e. ~0.1375 TFLOP an image, growing with the pixel count; and the H200's
# dense bf16 rate (spec sheet, SXM): the per-image floor the measured cost is set against (full-size
# SD VAE only: meaningless for the smoke preset's tiny one).
VAE_TFLOP_PER_IMAGE_128 = 0.55 / 4
H200_BF16_TFLOPS = 989.0
SMOKE_KEYS = "iters: 6\nnum_pts: 300\nmax_gaussians: 600\ndensity_start_iter: 0\ndensity_end_iter: 0\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="text_mv_fast")
    p.add_argument("--counts", default="1,2,4,8", help="simultaneous requests, comma-separated")
    p.add_argument("--setups", default=",".join(SETUPS), help="any of serial,batched,procs")
    p.add_argument("--max-batch", type=int, default=8, help="the batched endpoint's max_batch")
    p.add_argument("--procs", type=int, default=PROCS, help="endpoints in the procs setup")
    p.add_argument("--compile", action="store_true", help="keep the preset's torch.compile (slow warm-up)")
    p.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    p.add_argument("--profile", default="1,4,8", help="batched-step profile job counts ('' to skip)")
    p.add_argument("--profile-steps", type=int, default=20)
    p.add_argument("--ready-timeout", type=float, default=420.0, help="seconds for endpoints to load")
    p.add_argument("--warm", type=int, default=1, help="1: one untimed request per endpoint first (default)")
    p.add_argument(
        "--load-together",
        action="store_true",
        help="load every setup's endpoints at once (compiles overlap), then measure each in turn",
    )
    p.add_argument("--json", help="write the figures here as JSON")
    p.add_argument("--logs", help="folder for the endpoints' logs (default: a temporary one)")
    p.add_argument("--smoke", action="store_true", help="CPU, smoke preset shrunk, counts 1,2, 2 procs")
    args = p.parse_args(argv)
    if args.smoke:
        args.preset, args.device, args.counts, args.procs = "smoke", "cpu", "1,2", 2
        args.profile, args.profile_steps, args.max_batch = "1,2", 2, 2
    return args


# --- endpoints ------------------------------------------------------------------------------------


def write_presets(directory: Path, args: argparse.Namespace) -> dict[str, str]:
    """One user preset per setup, each `extends:` the preset under test."""
    extra = "" if args.compile else "compile: false\n"
    if args.smoke:
        extra += SMOKE_KEYS
    names = {}
    for setup, max_batch in (("serial", 1), ("batched", args.max_batch), ("procs", 1)):
        name = f"conc_{setup}"
        (directory / f"{name}.yaml").write_text(f"extends: {args.preset}\nmax_batch: {max_batch}\n{extra}")
        names[setup] = name
    return names


@contextlib.contextmanager
def endpoints(
    groups: dict[str, tuple[int, str]], args: argparse.Namespace, env: dict[str, str]
) -> Iterator[dict[str, list[ServerProcess]]]:
    """Each group's serve processes ({name: (count, preset)}), all started together (their loads
    and compiles overlap) and stopped at the end; their logs are kept under --logs whatever
    happens."""
    serve = ["serve", "--queue", "16", "--device", args.device, "--shutdown-grace", "1"]
    if args.device == "cuda":
        serve.append("--random-weights")
    servers: dict[str, list[ServerProcess]] = {name: [] for name in groups}
    with contextlib.ExitStack() as stack:
        try:
            started = time.monotonic()
            for name, (count, preset) in groups.items():
                argv = [*serve, "--preset", preset]
                for _ in range(count):
                    servers[name].append(
                        stack.enter_context(running_server(argv, env=env, ready=None, timeout=60))
                    )
            for server in (s for group in servers.values() for s in group):
                left = args.ready_timeout - (time.monotonic() - started)
                server.wait_health(lambda h: h["status"] in ("ready", "error"), timeout=max(left, 1.0))
                health = server.health()
                if health["status"] != "ready":
                    raise RuntimeError(f"endpoint failed to load: {health['message']}")
            loaded = ", ".join(f"{count} x {preset}" for count, preset in groups.values())
            print(f"  endpoints ready ({loaded}) in {time.monotonic() - started:.0f}s", flush=True)
            yield servers
        finally:
            if args.logs:
                for name, group in servers.items():
                    for k, server in enumerate(group):
                        Path(args.logs, f"{groups[name][1]}-{k}.log").write_text(server.output())


def visible_gpu() -> str:
    """nvidia-smi's index (or UUID) of the GPU the endpoints use: the first of
    CUDA_VISIBLE_DEVICES, which nvidia-smi ignores (a session-7 run on GPU 1 read GPU 0)."""
    return (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0].strip() or "0"


class GpuMemory:
    """Peak of the GPU's used memory (nvidia-smi) while the block runs, above the idle baseline
    (read now, or `baseline` bytes: the idle GPU before the endpoints of a block started inside)."""

    def __init__(self, device: str, baseline: int | None = None) -> None:
        self.enabled = device == "cuda"
        self.baseline = (self._used() if baseline is None else baseline) if self.enabled else 0
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _used(self) -> int:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", visible_gpu()],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        try:
            return int(out.split()[0]) * 2**20
        except (IndexError, ValueError):
            return 0

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, self._used())

    def __enter__(self) -> GpuMemory:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join(5)
            self.peak = max(self.peak, self._used())

    @property
    def peak_gib(self) -> float | None:
        return round((self.peak - self.baseline) / 2**30, 2) if self.enabled else None


# --- requests -------------------------------------------------------------------------------------


def burst(servers: list[ServerProcess], count: int) -> dict[str, Any]:
    """`count` requests sent at once (request k to endpoint k % len(servers)); figures of the burst."""
    from engine.formats.ply import read_ply
    from engine.gate import check_gate

    results: list[dict[str, Any]] = [{} for _ in range(count)]
    go = threading.Event()

    def send(k: int) -> None:
        server = servers[k % len(servers)]
        go.wait()
        started = time.monotonic()
        try:
            response = httpx.post(
                server.url("/generate/"), data={"prompt": PROMPTS[k % len(PROMPTS)]}, timeout=900
            )
            ended = time.monotonic()
            ok = response.status_code == 200
            gate = ok and check_gate(read_ply(response.content)).passed
            engine_s = float(response.headers.get("x-generation-time", "nan")) if ok else None
            results[k] = {
                "status": response.status_code,
                "start": started,
                "end": ended,
                "gate": gate,
                "engine_s": engine_s,
            }
        except httpx.HTTPError as exc:
            results[k] = {
                "status": None,
                "start": started,
                "end": time.monotonic(),
                "gate": False,
                "error": str(exc),
            }

    threads = [threading.Thread(target=send, args=(k,)) for k in range(count)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join()
    ok = [r for r in results if r["status"] == 200]
    latencies = sorted(r["end"] - r["start"] for r in ok)
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {
        "requests": count,
        "ok": len(ok),
        "gate_passed": sum(bool(r["gate"]) for r in results),
        "wall_s": round(wall, 3),
        "gens_per_hour": round(len(ok) / wall * 3600, 1) if wall > 0 else None,
        "p50_s": round(_quantile(latencies, 0.5), 3) if latencies else None,
        "p95_s": round(_quantile(latencies, 0.95), 3) if latencies else None,
        "max_s": round(latencies[-1], 3) if latencies else None,
        "engine_s": [round(r["engine_s"], 3) for r in ok],
    }


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def torch_peak_gib(servers: list[ServerProcess]) -> float | None:
    peaks = [
        (httpx.get(s.url("/stats"), timeout=10).json().get("gpu_memory") or {}).get("peak_bytes")
        for s in servers
    ]
    return round(sum(peaks) / 2**30, 2) if all(p is not None for p in peaks) else None


def measure(setup: str, servers: list[ServerProcess], counts: list[int], args: argparse.Namespace) -> dict:
    """The bursts on one setup's loaded endpoints, and their torch peak memory."""
    if args.warm:  # one untimed request per endpoint: first-request costs stay out of the figures
        burst(servers, len(servers))
    figures = {}
    for count in counts:
        figures[str(count)] = row = burst(servers, count)
        print(
            f"  {setup}, {count} at once: {row['ok']}/{count} ok, gate {row['gate_passed']}, "
            f"{row['gens_per_hour']} gens/h, p50 {row['p50_s']}s p95 {row['p95_s']}s max {row['max_s']}s",
            flush=True,
        )
    return {"bursts": figures, "torch_peak_gib": torch_peak_gib(servers)}


def endpoint_count(setup: str, args: argparse.Namespace) -> int:
    return args.procs if setup == "procs" else 1


def run_setup(
    setup: str, preset: str, counts: list[int], args: argparse.Namespace, env: dict[str, str]
) -> dict:
    """One setup alone on the GPU: its endpoints loaded, measured, stopped."""
    print(f"== {setup} ({preset})", flush=True)
    started = time.monotonic()
    groups = {setup: (endpoint_count(setup, args), preset)}
    with (
        GpuMemory(args.device) as memory,
        endpoints(groups, args, env) as servers,
        GpuMemory(args.device, memory.baseline) as serving,  # the bursts only, warm-up excluded
    ):
        figures = measure(setup, servers[setup], counts, args)
    return {
        "preset": preset,
        **figures,
        "gpu_peak_gib": memory.peak_gib,
        "gpu_serving_gib": serving.peak_gib,
        "setup_s": round(time.monotonic() - started, 1),
    }


def failed_setup(setup: str, preset: str, exc: Exception) -> dict:
    print(f"  {setup} failed: {type(exc).__name__}: {exc}", flush=True)
    return {
        "preset": preset,
        "error": f"{type(exc).__name__}: {exc}",
        "bursts": {},
        "gpu_peak_gib": None,
        "torch_peak_gib": None,
    }


def guarded_setup(
    setup: str, preset: str, counts: list[int], args: argparse.Namespace, env: dict[str, str]
) -> dict:
    """run_setup, but a setup that fails (an endpoint that does not load) is recorded, not fatal:
    one device call should still bring back the other setups' figures."""
    try:
        return run_setup(setup, preset, counts, args, env)
    except Exception as exc:
        return failed_setup(setup, preset, exc)


def loaded_together(
    wanted: list[str], names: dict[str, str], counts: list[int], args: argparse.Namespace, env: dict[str, str]
) -> dict[str, dict]:
    """--load-together: every setup's endpoints load (and compile) at once, then each setup is
    measured in turn while the others sit idle (an idle endpoint takes no GPU time, but keeps its
    memory: nvidia-smi's peak is then the whole run's, not a setup's, and is left out)."""
    print(f"== {', '.join(wanted)} loaded together", flush=True)
    groups = {setup: (endpoint_count(setup, args), names[setup]) for setup in wanted}
    try:
        with endpoints(groups, args, env) as servers:
            return {
                setup: {
                    "preset": names[setup],
                    **measure(setup, servers[setup], counts, args),
                    "gpu_peak_gib": None,
                }
                for setup in wanted
            }
    except Exception as exc:
        return {setup: failed_setup(setup, names[setup], exc) for setup in wanted}


# --- the batched step's profile (in this process, after the endpoints are gone) --------------------


def profile_batched_step(args: argparse.Namespace, jobs_list: list[int]) -> dict[str, Any]:
    import dataclasses

    import torch

    from engine.batch_pipeline import BatchEngine
    from engine.pipeline import Generator
    from engine.presets import load_preset

    preset = load_preset(args.preset)
    preset = dataclasses.replace(
        preset,
        compile=preset.compile and args.compile,
        max_batch=max(jobs_list),
        iters=args.profile_steps + 10,  # no job finishes inside the window (3 warm steps + margin)
        density_start_iter=args.profile_steps + 11,
        density_end_iter=args.profile_steps + 11,
    )
    if args.smoke:
        preset = dataclasses.replace(preset, num_pts=300, max_gaussians=600)
    generator = Generator(preset, device=args.device, random_weights=args.device == "cuda", sync_timings=True)
    generator.load()
    profile: dict[str, Any] = {}
    for jobs in jobs_list:
        engine = BatchEngine(generator, max_batch=max(jobs_list))
        engine.time_substages = True  # vae_encode and unet inside the guidance stage, synced
        for k in range(jobs):
            engine.add(PROMPTS[k % len(PROMPTS)], seed=k)
        for _ in range(3):  # capture / warm this bucket
            engine.step()
        totals = dict.fromkeys(engine.step_timings, 0.0)
        wall = time.perf_counter()
        for _ in range(args.profile_steps):
            engine.step()
            for stage, seconds in engine.step_timings.items():
                totals[stage] += seconds
        wall = time.perf_counter() - wall
        stages_ms = {k: round(v / args.profile_steps * 1e3, 3) for k, v in totals.items() if v}
        row = {"step_ms": round(wall / args.profile_steps * 1e3, 3), "stages_ms": stages_ms}
        row.update(_guidance_alone(engine, jobs, torch))
        profile[str(jobs)] = row
        print(f"  profile {jobs} job(s): {row}", flush=True)
        del engine
    return profile


def _guidance_alone(engine: Any, jobs: int, torch: Any) -> dict[str, float]:
    """The VAE encoder fwd+bwd and the CFG UNet alone at this bucket's shapes (ms, median of 10)."""
    from engine.batch_pipeline import bucket_for

    g, p = engine.guidance, engine.preset
    rows = bucket_for(jobs, engine.max_batch) * p.batch_size
    images = torch.rand(rows, 3, p.render_size, p.render_size, device=engine.device, requires_grad=True)

    def vae() -> None:
        mean, std = g.posterior(images)
        (mean.float().sum() + std.float().sum()).backward()

    job = engine.jobs[0]
    latents = torch.randn(rows, 4, p.ref_size // 8, p.ref_size // 8, device=engine.device, dtype=g.dtype)
    t = torch.full((rows,), 500, device=engine.device, dtype=torch.long)
    cond = job.embeds.cond.expand(rows, -1, -1)
    embeds = type(job.embeds)(cond=cond, uncond=job.embeds.uncond.expand(rows, -1, -1))
    camera = job.plan.camera[0].repeat(rows // p.batch_size, 1) if job.plan.camera is not None else None

    def unet() -> None:
        g.predict_noise(latents, t, embeds, None, p.guidance_scale, camera=camera)

    vae_ms = _median_ms(vae, torch, engine.device)
    floor_ms = VAE_TFLOP_PER_IMAGE_128 * (p.ref_size / 128) ** 2 / H200_BF16_TFLOPS * 1e3
    return {
        "rows": rows,
        "vae_fwd_bwd_ms": vae_ms,
        "vae_ms_per_image": round(vae_ms / rows, 4),
        "vae_floor_ms_per_image_h200": round(floor_ms, 4),
        "unet_cfg_ms": _median_ms(unet, torch, engine.device),
    }


def _median_ms(fn: Any, torch: Any, device: Any, runs: int = 10) -> float:
    fn()
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e3, 3)


# --- verdicts -------------------------------------------------------------------------------------


def acceptance(setups: dict[str, dict], preset: str) -> list[str]:
    """The issue's targets, each with the figures it was judged on."""
    lines = []
    b, s, m = (setups.get(k, {}).get("bursts", {}) for k in ("batched", "serial", "procs"))
    if preset == "text_mv_fast" and "4" in b:
        v = b["4"]["max_s"]
        lines.append(
            f"4 simultaneous answered within 6.0 s: {_mark(v is not None and v <= 6.0)} (last at {v} s)"
        )
    if preset == "text_mv" and "4" in b:
        v = b["4"]["max_s"]
        lines.append(
            f"4 simultaneous answered within 90 s: {_mark(v is not None and v <= 90.0)} (last at {v} s)"
        )
    if "8" in b and "8" in s:
        ratio = _ratio(b["8"]["gens_per_hour"], s["8"]["gens_per_hour"])
        lines.append(
            f"8 simultaneous: batched gens/h >= 2x one-at-a-time: {_mark(ratio is not None and ratio >= 2)} ({ratio}x)"
        )
    if m:
        mem_b, mem_m = setups.get("batched", {}).get("gpu_peak_gib"), setups["procs"].get("gpu_peak_gib")
        serving_b = setups.get("batched", {}).get("gpu_serving_gib")
        serving_m = setups["procs"].get("gpu_serving_gib")
        for count in ("4", "8"):
            if count in b and count in m:
                ratio = _ratio(b[count]["gens_per_hour"], m[count]["gens_per_hour"])
                p95_ok = (b[count]["p95_s"] or 1e9) <= (m[count]["p95_s"] or 0)
                mem_ok = mem_b is not None and mem_m is not None and mem_b <= mem_m / 2
                ok = ratio is not None and ratio >= 1.5 and p95_ok and mem_ok
                lines.append(
                    f"{count} simultaneous: batched >= 1.5x {PROCS}-process gens/h at <= p95, <= half memory: "
                    f"{_mark(ok)} ({ratio}x; p95 {b[count]['p95_s']} vs {m[count]['p95_s']} s; "
                    f"GPU {mem_b} vs {mem_m} GiB with warm-up, {serving_b} vs {serving_m} GiB serving)"
                )
    return lines


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def _mark(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def table(setups: dict[str, dict], counts: list[int]) -> str:
    head = f"{'setup':8} {'n':>2} {'ok':>5} {'gate':>4} {'gens/h':>8} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'GPU GiB':>8} {'serving':>8} {'torch GiB':>9}"
    lines = [head, "-" * len(head)]
    for name, setup in setups.items():
        for count in counts:
            r = setup["bursts"].get(str(count))
            if r is None:
                continue
            lines.append(
                f"{name:8} {count:>2} {r['ok']:>2}/{count:<2} {r['gate_passed']:>4} {r['gens_per_hour'] or 0:>8.0f} "
                f"{r['p50_s'] or 0:>7.2f} {r['p95_s'] or 0:>7.2f} {r['max_s'] or 0:>7.2f} "
                f"{setup['gpu_peak_gib'] if setup['gpu_peak_gib'] is not None else '-':>8} "
                f"{setup.get('gpu_serving_gib') if setup.get('gpu_serving_gib') is not None else '-':>8} "
                f"{setup['torch_peak_gib'] if setup['torch_peak_gib'] is not None else '-':>9}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    counts = [int(c) for c in args.counts.split(",") if c]
    wanted = [s for s in args.setups.split(",") if s]
    unknown = set(wanted) - set(SETUPS)
    if unknown:
        raise SystemExit(f"unknown setup(s): {', '.join(sorted(unknown))}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gen404-conc-") as tmp:
        names = write_presets(Path(tmp), args)
        env = {"GEN404_PRESETS_DIR": tmp, "PYTHONUNBUFFERED": "1"}
        if args.load_together:
            setups = loaded_together(wanted, names, counts, args, env)
        else:
            setups = {setup: guarded_setup(setup, names[setup], counts, args, env) for setup in wanted}
    profile_counts = [int(c) for c in args.profile.split(",") if c]
    profile: dict[str, Any] = {}
    if profile_counts:
        try:
            profile = profile_batched_step(args, profile_counts)
        except Exception as exc:  # keep the endpoint figures already taken
            profile = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"  profile failed: {profile['error']}", flush=True)
    verdicts = acceptance(setups, args.preset)
    print(
        f"\n{args.preset}, {'compiled' if args.compile else 'uncompiled (compile: false)'}, device {_device_name(args)}"
    )
    print(table(setups, counts))
    for name, setup in setups.items():
        if "error" in setup:
            print(f"{name}: FAILED: {setup['error']}")
    for line in verdicts:
        print(line)
    report = {
        "preset": args.preset,
        "compile": args.compile,
        "device": _device_name(args),
        "max_batch": args.max_batch,
        "loaded_together": args.load_together,
        "procs": args.procs,
        "setups": setups,
        "profile_ms": profile,
        "acceptance": verdicts,
        "total_s": round(time.monotonic() - started, 1),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"total {report['total_s']}s")
    return 0


def _device_name(args: argparse.Namespace) -> str:
    if args.device != "cuda":
        return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "cuda"


if __name__ == "__main__":
    sys.exit(main())
