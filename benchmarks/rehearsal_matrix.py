"""Projected reward per preset on this machine: a short rehearsal per preset, printed as a table.

What is measured and what is projected (nothing else is claimed):
1. One real `gen404 serve` endpoint runs smoke's tiny models (CPU). Generation time is measured
   at two iteration counts (`--iters-a`, `--iters-b`) and fitted as fixed + per-iteration cost.
2. Each preset's time per generation on this machine is projected from that fit at the preset's
   own iteration count: "smoke-sized models, the preset's step count". Real MVDream models cost
   far more per step; the H200 column uses ../shared/docs/performance-anchors.md (measured there, not here).
3. Per preset, a rehearsal runs the miner's loop (selector, simulated validators with the
   subnet's rules, `--endpoints` workers) on a virtual clock for `--hours`, each task charged
   the projected time; the endpoint's real output (captured in step 1) is replayed, SPZ-
   compressed and scored for every task. Counts are scaled to the 4-hour window.
4. Scores: the local validation service when it answers (`--validator-url`), else the gate-only
   stand-in, which measures no quality: then "score x generations" cannot be computed and the
   table says so; the last column multiplies by the seed guide's CLIP estimates, labelled as such.

    python -m benchmarks.rehearsal_matrix [--hours 1] [--endpoints 2] [--port 18190]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.machine import cpu_model, load_average
from console.mining.clock import VirtualClock
from console.mining.ledger import project
from console.mining.miner_loop import EndpointSpec, RehearsalMiner, load_prompts
from console.mining.scorers import pick_scorer
from console.mining.state import MiningState
from console.mining.validators import load_validators
from engine.formats import spz
from engine.presets import load_preset

REPO = Path(__file__).resolve().parents[1]

PRESETS = ["text_mv_ultra_fast", "text_mv_fast", "text_mv", "smoke"]
GUIDE_CLIP = {"text_mv_ultra_fast": 0.62, "text_mv_fast": 0.70, "text_mv": 0.80}  # seed guide, not measured
H200_MS_PER_ITER = 105.0  # ../shared/docs/performance-anchors.md: reference loop, full-size models, H200


def machine(device: str = "cpu") -> str:
    cpu = cpu_model()
    loads = load_average()
    load = loads[0] if loads else float("nan")
    gpu = "no GPU used"
    if device != "cpu":
        try:
            names = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            gpu = f"GPU {names.splitlines()[0]}" if names else "GPU (unnamed)"
        except (OSError, subprocess.SubprocessError):
            gpu = "GPU (nvidia-smi unavailable)"
    return f"{cpu}, {os.cpu_count()} cores, load {load:.1f}, {gpu}"


@dataclass
class Fit:
    fixed_s: float
    per_iter_s: float
    samples: dict[int, list[float]]

    def time_for(self, iters: int) -> float:
        return self.fixed_s + self.per_iter_s * iters


def start_endpoint(
    port: int, presets_dir: Path, first: str, log: Path, device: str = "cpu", random_weights: bool = False
) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "engine.cli",
        "serve",
        "--port",
        str(port),
        "--preset",
        first,
        "--device",
        device,
    ]
    if random_weights:
        cmd.append("--random-weights")
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "GEN404_PRESETS_DIR": str(presets_dir), "PYTHONPATH": pythonpath}
    return subprocess.Popen(
        cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def wait_ready(url: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).json().get("status") == "ready":
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def measure(url: str, iters: tuple[int, int], repeats: int) -> tuple[Fit, bytes]:
    samples: dict[int, list[float]] = {}
    output = b""
    with httpx.Client(timeout=600) as client:
        for n in iters:
            r = client.put(url + "/preset", json={"name": f"smoke_it{n}"})
            r.raise_for_status()
            samples[n] = []
            for i in range(repeats):
                r = client.post(url + "/generate/", data={"prompt": f"a red ceramic teapot {i}"})
                r.raise_for_status()
                samples[n].append(float(r.headers["X-Generation-Time"]))
                output = r.content
    a, b = iters
    ta, tb = statistics.median(samples[a]), statistics.median(samples[b])
    per_iter = max(0.0, (tb - ta) / (b - a))
    return Fit(max(0.0, ta - per_iter * a), per_iter, samples), output


async def rehearse(
    preset: str,
    gen_s: float,
    ply: bytes,
    hours: float,
    endpoints: int,
    prompts: list[str],
    validator_url: str | None,
) -> dict:
    validators = load_validators()
    scorer = await pick_scorer(validator_url)
    clock = VirtualClock(participants=endpoints + 2)

    def replay(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=ply, headers={"X-Preset": preset})

    state = MiningState()
    miner = RehearsalMiner(
        validators,
        [EndpointSpec(f"http://endpoint-{i}", preset) for i in range(endpoints)],
        prompts,
        scorer,
        clock,
        state=state,
        task_time=lambda _preset, _wall: gen_s,
        seed=0,
        transport=httpx.MockTransport(replay),
    )
    stop = asyncio.Event()

    async def stopper() -> None:
        await clock.sleep(hours * 3600)
        clock.freeze()  # the rehearsal ends here: nothing moves while the workers are cancelled
        stop.set()

    t = asyncio.create_task(stopper())
    await miner.run(stop)
    await t
    await scorer.aclose()
    now = clock.now()
    window = state.ledger.window(now)
    scale = 4.0 / hours
    acceptance = state.ledger.acceptance_rate(now)
    return {
        "results_4h": len(window) * scale,
        "accepted_4h": state.ledger.accepted(now) * scale,
        "acceptance": acceptance,
        "mean_score": state.ledger.mean_score(now),
        "gate_only": state.ledger.gate_only(now),
        "missed_4h": state.ledger.missed_windows(now) * scale,
        "scorer": scorer.label,
        "rules": [v.rules for v in validators.validators],
    }


def fmt(x: float | None, f: str = "{:.1f}") -> str:
    return "n/a" if x is None else f.format(x)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hours", type=float, default=1.0, help="virtual hours rehearsed per preset (default 1)")
    p.add_argument("--endpoints", type=int, default=2, help="endpoints (miner workers) rehearsed (default 2)")
    p.add_argument("--port", type=int, default=18190)
    p.add_argument("--iters-a", type=int, default=2)
    p.add_argument("--iters-b", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--prompts", type=Path, default=None)
    p.add_argument("--validator-url", default="http://127.0.0.1:8094")
    p.add_argument(
        "--direct",
        action="store_true",
        help="time the text_mv presets themselves (a GPU box; with --random-weights: full-size "
        "architectures, random weights) instead of projecting from smoke-sized runs",
    )
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    p.add_argument("--random-weights", action="store_true")
    p.add_argument(
        "--gen-times",
        metavar="PRESET=S,...",
        help="seconds per generation measured elsewhere (e.g. `gen404 bench` on a GPU box): skips the "
        "endpoint measurement when all presets are given; the table labels them 'given'",
    )
    args = p.parse_args()
    given = {
        k: float(v) for k, v in (item.split("=", 1) for item in (args.gen_times or "").split(",") if item)
    }

    label = machine(args.device)
    prompts = load_prompts(args.prompts)
    url = f"http://127.0.0.1:{args.port}"
    if set(PRESETS) <= set(given):
        return print_table(label, args, None, b"", 0.0, given, prompts)
    if args.direct:
        return direct(args, label, url, prompts)
    with tempfile.TemporaryDirectory() as tmp:
        presets_dir = Path(tmp)
        for n in (args.iters_a, args.iters_b):
            (presets_dir / f"smoke_it{n}.yaml").write_text(f"extends: smoke\niters: {n}\n")
        proc = start_endpoint(args.port, presets_dir, f"smoke_it{args.iters_a}", presets_dir / "serve.log")
        try:
            print(f"endpoint starting ({url}, smoke models)...", file=sys.stderr)
            wait_ready(url)
            print("measuring generation time per iteration count...", file=sys.stderr)
            fit, ply = measure(url, (args.iters_a, args.iters_b), args.repeats)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    t0 = time.perf_counter()
    spz.compress(ply)
    compress_s = time.perf_counter() - t0
    return print_table(label, args, fit, ply, compress_s, given, prompts)


def direct(args: argparse.Namespace, label: str, url: str, prompts: list[str]) -> int:
    """Measure each text_mv preset on its own endpoint models (they share models: no reload)."""
    names = [n for n in PRESETS if n != "smoke"]
    times: dict[str, float] = {}
    ply = b""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "serve.log"
        proc = start_endpoint(args.port, Path(tmp), names[0], log, args.device, args.random_weights)
        try:
            print(f"endpoint starting ({url}, {names[0]}, {args.device})...", file=sys.stderr)
            wait_ready(url, timeout=900)
            with httpx.Client(timeout=900) as client:
                for name in names:
                    client.put(url + "/preset", json={"name": name}).raise_for_status()
                    if name == names[0]:  # first use: kernels compile, caches fill (shared by all three)
                        client.post(url + "/generate/", data={"prompt": "warm-up teapot"}).raise_for_status()
                    samples: list[float] = []
                    for i in range(args.repeats):
                        if samples and samples[0] > 60:
                            break  # a slow preset: one sample says enough
                        t0 = time.perf_counter()
                        r = client.post(url + "/generate/", data={"prompt": prompts[i % len(prompts)]})
                        r.raise_for_status()
                        samples.append(time.perf_counter() - t0)
                        ply = r.content
                    times[name] = statistics.median(samples)
                    print(f"{name}: {', '.join(f'{x:.2f}' for x in samples)} s", file=sys.stderr)
        except Exception:
            print(log.read_text(errors="replace")[-4000:], file=sys.stderr)
            raise
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
    t0 = time.perf_counter()
    spz.compress(ply)
    compress_s = time.perf_counter() - t0
    measured = {k: v + compress_s for k, v in times.items()}
    print(
        f"# measured here (client wall time + SPZ), random weights={args.random_weights}: {measured}",
        file=sys.stderr,
    )
    return print_table(label, args, None, ply, compress_s, measured, prompts, only=names, source="measured")


def print_table(
    label: str,
    args: argparse.Namespace,
    fit: Fit | None,
    ply: bytes,
    compress_s: float,
    given: dict[str, float],
    prompts: list[str],
    only: list[str] | None = None,
    source: str = "given",
) -> int:
    if not ply:
        ply = (REPO / "tests" / "vectors" / "hamburger.ply").read_bytes()  # a real result to replay
    rows = []
    for name in only or PRESETS:
        iters = load_preset(name).iters
        if name in given:
            gen_s = given[name]
        else:
            assert fit is not None
            gen_s = fit.time_for(iters) + compress_s
        print(f"rehearsing {name}: {gen_s:.1f} s per task, {args.hours:g} virtual h...", file=sys.stderr)
        r = asyncio.run(rehearse(name, gen_s, ply, args.hours, args.endpoints, prompts, args.validator_url))
        analytic = project(
            gen_s, r["rules"], args.endpoints, acceptance=r["acceptance"] or 1.0, score=r["mean_score"]
        )
        h200_s = iters * H200_MS_PER_ITER / 1000
        h200 = project(h200_s, r["rules"], args.endpoints)
        rows.append((name, iters, gen_s, r, analytic, h200_s, h200))

    print(f"\n# Projected reward per preset: {label}")
    if fit is not None:
        samples = "; ".join(
            f"{n} iters: {', '.join(f'{s:.2f}' for s in v)} s" for n, v in fit.samples.items()
        )
        print(
            f"# smoke-sized endpoint measured: {samples}; fit {fit.fixed_s:.2f} s + {fit.per_iter_s:.3f} s/iter;"
        )
    if given:
        what = "given (not measured here)" if source == "given" else "measured here, each preset itself"
        print(f"# {what}: seconds per generation {given}")
    print(
        f"# SPZ compression {compress_s:.2f} s. {args.endpoints} endpoints, validators from console/data/validators.yaml,"
    )
    print(f"# {args.hours:g} virtual h rehearsed per preset, scaled to 4 h. Scorer: {rows[0][3]['scorer']}.")
    print()
    print(
        "| preset | iters | s/gen | rehearsal gens/4h | accepted/4h | analytic gens/4h | bound by | "
        "missed windows/4h | mean score | score x accepted | x guide CLIP est. | s/gen H200 (anchors) | H200 gens/4h |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, iters, gen_s, r, a, h200_s, h200 in rows:
        score = r["mean_score"]
        accepted = r["accepted_4h"]
        reward = "gate-only: no score" if score is None else f"{score * accepted:.1f}"
        clip = GUIDE_CLIP.get(name)
        guide = "-" if clip is None else f"{clip:.2f} x {accepted:.0f} = {clip * accepted:.1f}"
        src = f" ({source})" if name in given else ""
        print(
            f"| {name} | {iters} | {gen_s:.1f}{src} | {r['results_4h']:.0f} | {r['accepted_4h']:.0f} | "
            f"{a.generations_4h:.0f} | {a.limited_by} | {r['missed_4h']:.0f} | {fmt(score, '{:.2f}')} | {reward} | "
            f"{guide} | {h200_s:.1f} | {h200.generations_4h:.0f} |"
        )
    print(
        "\nRehearsal counts include every submitted result; accepted/4h excludes rejected and duplicate ones (a task "
        "longer than the miner's 300 s busy mark lets a second worker pull the same validator, which hands out the "
        "same task again; the slower submit is refused). A missed window: a validator free for 30 s or more while "
        "every endpoint was busy. 'x guide CLIP est.' multiplies accepted/4h by the seed "
        "guide's expected CLIP score (not measured). H200 columns: the subnet's reference loop at 105 ms/iteration "
        "(../shared/docs/performance-anchors.md), analytic, no rejections."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
