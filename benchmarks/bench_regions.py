"""compile_regions against whole-model packages, side by side on one endpoint (issue 16).

`compile_regions: true` compiles the UNet and VAE encoder block by block, so a cold compile splits
between more helpers (a shorter first start), but the glue between blocks is no longer fused.
Whether the bundled presets should use it turns on what it costs every generation afterwards:
  1. one `gen404 serve` process (full-size random weights, fresh compiler caches) starts on
     `--preset` with compile_regions (a first start on a fresh box: its figures are issue 16's);
     PUT /preset then switches it to the same preset with whole-model packages (their own cold
     compile, in helpers);
  2. `--rounds` rounds alternate the two (warm switches), `--requests` requests each; the
     generation times (X-Generation-Time) per mode: median, min, and the ratio regions / whole.
     One process, one GPU and alternation keep machine drift out of the ratio;
  3. each mode's second start: a fresh `gen404 serve` with the packages the first built (inductor
     and Triton caches empty again): ready seconds and /health's phases.
Prints a table naming the machine; writes bench_regions.json to --out (default $OUT or /tmp).

GPU (H200, repo root, ~6 min after gsplat's one-off build):
    source benchmarks/gpu_env.sh regions && gsplat_restore && gsplat_build && \
      timeout 560 python3 -m benchmarks.bench_regions --out "$OUT" 2>&1 | tee -a "$LOG"
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_restart import (
    build_record,
    finish_run,
    free_port,
    fresh_compiler_caches,
    machine_name,
    put_preset,
    random_weight_presets,
    request,
    serve_argv,
    start_run,
    stop,
    timed_start,
    use_private_dirs,
    wait_ready,
)


def regions_twin(preset: str, directory: Path) -> str:
    """A preset file `<preset>_regions` beside the random-weight copy: the same, block by block."""
    name = f"{preset}_regions"
    (directory / f"{name}.yaml").write_text(f"extends: {preset}\ncompile_regions: true\n")
    return name


def summary(times: list[float]) -> dict[str, Any]:
    return {
        "n": len(times),
        "median_s": statistics.median(times) if times else None,
        "min_s": min(times) if times else None,
        "all_s": times,
    }


def side_by_side(
    args: argparse.Namespace, whole: str, regions: str, log: Path, deadline: float
) -> dict[str, Any]:
    """Parts 1 and 2 on one serve process."""
    result: dict[str, Any] = {}
    port = free_port()
    launched = time.monotonic()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            serve_argv(port, regions, args.device),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        info = wait_ready(port, deadline, proc)
        if "bench_error" in info:
            return {"error": f"first start: {info['bench_error']}"}
        result["regions_first_start_s"] = time.monotonic() - launched
        result["regions_first_phases"] = {
            **(info.get("phases") or {}),
            **(build_record(info, "phases") or {}),
        }
        print(f"regions: first start ready in {result['regions_first_start_s']:.1f} s", flush=True)
        result["whole_cold_switch"] = cold = put_preset(port, whole, max(1.0, deadline - time.monotonic()))
        print(
            f"switch to whole-model packages (cold): HTTP {cold['status']} in {cold['seconds']:.1f} s",
            flush=True,
        )
        if cold["status"] != 200:
            return {**result, "error": f"cold switch: {cold['body']}"}
        times: dict[str, list[float]] = {whole: [], regions: []}
        switches: list[dict[str, Any]] = []
        for round_no in range(args.rounds):
            for name in (whole, regions):
                if time.monotonic() > deadline - 60:
                    result["cut_short"] = f"round {round_no + 1}: time budget"
                    break
                switches.append(put_preset(port, name, 120.0))
                request(port)  # the first after a switch: not steady state
                for _ in range(args.requests):
                    answer = request(port)
                    if answer.get("ok") and answer.get("preset") == name:
                        times[name].append(answer["generation_s"])
            print(
                f"round {round_no + 1}: whole {summary(times[whole])['median_s']}, regions"
                f" {summary(times[regions])['median_s']}",
                flush=True,
            )
        result["warm_switches"] = switches
        result["whole"], result["regions"] = summary(times[whole]), summary(times[regions])
        if times[whole] and times[regions]:
            result["ratio_median"] = result["regions"]["median_s"] / result["whole"]["median_s"]
            result["ratio_min"] = result["regions"]["min_s"] / result["whole"]["min_s"]
        return result
    finally:
        stop(proc)


def table(results: dict[str, Any]) -> str:
    rows = [f"machine: {results['machine']}; preset {results['preset']} (random weights)"]
    side = results.get("side_by_side") or {}
    if side.get("error"):
        rows.append(f"ERROR {side['error']}")
    for key in ("whole", "regions"):
        s = side.get(key) or {}
        if s.get("n"):
            rows.append(
                f"{key:<8} generation median {s['median_s']:.3f} s, min {s['min_s']:.3f} s ({s['n']} requests)"
            )
    if "ratio_median" in side:
        rows.append(f"regions / whole: median {side['ratio_median']:.4f}, min {side['ratio_min']:.4f}")
    if "regions_first_start_s" in side:
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in (side.get("regions_first_phases") or {}).items())
        rows.append(
            f"regions first start (fresh caches): ready {side['regions_first_start_s']:.2f} s [{phases}]"
        )
    cold = side.get("whole_cold_switch")
    if cold:
        rows.append(f"cold switch to whole-model packages: HTTP {cold['status']} in {cold['seconds']:.1f} s")
    for key in ("whole_second_start", "regions_second_start"):
        r = results.get(key)
        if r:
            phases = ", ".join(f"{k} {v:.1f}s" for k, v in (r.get("phases") or {}).items())
            ready = r.get("ready_s")
            rows.append(
                f"{key}: ready {'n/a' if ready is None else f'{ready:.2f} s'} [{phases}]"
                + (f" ERROR {r['error']}" if r.get("error") else "")
            )
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="text_mv_fast")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of whole, then regions")
    ap.add_argument("--requests", type=int, default=5, help="timed requests per mode and round")
    ap.add_argument("--no-restarts", action="store_true", help="skip part 3 (the second starts)")
    ap.add_argument("--out", default=os.environ.get("OUT") or tempfile.gettempdir())
    ap.add_argument("--deadline", type=float, default=540.0, help="seconds for everything")
    ap.add_argument("--keep", action="store_true", help="keep the private state and compiler caches")
    args = ap.parse_args()
    out, work = start_run(args.out, "gen404-regions-")
    presets_dir = work / "presets"
    random_weight_presets([args.preset], presets_dir, {"compile_backend": "aot", "compile_regions": "false"})
    regions = regions_twin(args.preset, presets_dir)
    use_private_dirs(work, presets_dir)
    log = out / "bench_regions_serve.log"
    results: dict[str, Any] = {"machine": machine_name(args.device), "preset": args.preset}
    began = time.monotonic()
    deadline = began + args.deadline
    try:
        fresh_compiler_caches(work, "first")
        results["side_by_side"] = side_by_side(args, args.preset, regions, log, deadline - 90)
        print(table(results), flush=True)
        if not args.no_restarts:
            for key, name in (("whole_second_start", args.preset), ("regions_second_start", regions)):
                left = deadline - time.monotonic()
                if left < 40:
                    break
                fresh_compiler_caches(work, key)  # only gen404's packages are left
                results[key] = timed_start(name, args.device, log, left)
    finally:  # whatever was measured is kept, even when the run was interrupted
        finish_run(results, began, out, "bench_regions", table(results), log, work, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
