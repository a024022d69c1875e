"""The life-cycle benchmark scripts run end to end on the CPU (tiny presets), as real processes.

Device time is scarce: a script that breaks on an API change must fail here, in CI, not in a
ten-minute GPU call. These check the scripts and what they report, not any speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _crash_argv(out: Path) -> list[str]:
    """bench_restart's crash part on the tiny CPU presets, writing to `out`."""
    return [
        sys.executable,
        "-m",
        "benchmarks.bench_restart",
        "--cpu-smoke",
        "--parts",
        "sigkill",
        "--out",
        str(out),
    ]


def test_bench_restart_measures_a_forked_restart_under_the_console(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        _crash_argv(out),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((out / "bench_restart.json").read_text())
    crash = results["sigkill"]
    assert "error" not in crash, crash
    assert crash["request_after_kill"]["ok"] and crash["restarts"] == 1
    assert crash["forked_starts"] == 1 and crash["fork_server"]["fork_safe"] is True  # the restart was a fork
    assert 0 < crash["serving_after_kill_s"] <= crash["answering_after_kill_s"]
    assert "first_start" not in results  # --parts left the starts out


def test_startup_probe_times_each_step_of_a_start(tmp_path: Path) -> None:
    report = tmp_path / "probe.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.probes.startup", "--preset", "smoke", "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    info = json.loads(report.read_text())
    steps = info["steps"]
    for step in ("import torch", "import diffusers+guidance", "build weights", "warm-up (compile+capture)"):
        assert steps[step] >= 0.0
    assert info["steps_run"] > 0 and info["first_generation_s"] > 0 and info["compile_failure"] is None


def test_bench_restart_cut_short_keeps_what_it_measured(tmp_path: Path) -> None:
    # a device call's `timeout` sends SIGTERM: the figures measured so far must reach the JSON
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _crash_argv(out),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # printed as soon as it is measured
            if "sigkill: first_ready_s" in line:
                break
        proc.terminate()
        proc.wait(timeout=60)
    finally:
        proc.kill()
    results = json.loads((out / "bench_restart.json").read_text())
    assert results["sigkill"]["first_ready_s"] > 0
    assert "answering_after_kill_s" not in results["sigkill"]


def test_concurrency_bench_reads_the_memory_of_the_gpu_it_runs_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.bench_concurrency import visible_gpu

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpu() == "0"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert visible_gpu() == "1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-3f2a,GPU-77b1")
    assert visible_gpu() == "GPU-3f2a"


def test_bench_restart_copies_keep_the_preset_s_compile_backend_unless_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a measurement of the bundled presets must run their own backend (aot), not the default
    from benchmarks.bench_restart import random_weight_presets
    from engine.presets import load_preset

    random_weight_presets(["text_mv_fast"], tmp_path / "own")
    random_weight_presets(["text_mv_fast"], tmp_path / "jit", {"compile_backend": "jit"})
    random_weight_presets(["text_mv_fast"], tmp_path / "regions", {"compile_regions": "true"})
    own = (tmp_path / "own" / "text_mv_fast.yaml").read_text()
    assert "weights: random" in own and load_preset("text_mv_fast").compile_backend == "aot"
    assert "compile_backend: aot" in own
    assert "compile_backend: jit" in (tmp_path / "jit" / "text_mv_fast.yaml").read_text()
    assert "compile_backend: aot" not in (tmp_path / "jit" / "text_mv_fast.yaml").read_text()
    monkeypatch.setenv("GEN404_PRESETS_DIR", str(tmp_path / "regions"))
    regions = load_preset("text_mv_fast")
    assert regions.compile_regions and regions.compile_backend == "aot" and regions.weights == "random"


def test_bench_regions_alternates_the_two_modes_on_one_endpoint(tmp_path: Path) -> None:
    # the smoke preset compiles nothing: this checks the switches, the alternation and the report
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "benchmarks.bench_regions", "--preset", "smoke", "--device", "cpu"]
    argv += ["--rounds", "2", "--requests", "1", "--no-restarts", "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    side = json.loads((out / "bench_regions.json").read_text())["side_by_side"]
    assert "error" not in side, side
    assert side["whole"]["n"] == 2 and side["regions"]["n"] == 2  # one timed request a mode a round
    assert side["ratio_median"] == side["regions"]["median_s"] / side["whole"]["median_s"]
    # it started on the block packages' preset, then each round switched to each mode
    assert side["whole_cold_switch"]["status"] == 200
    assert [s["target"] for s in side["warm_switches"]] == ["smoke", "smoke_regions"] * 2
    assert all(s["status"] == 200 for s in side["warm_switches"])
    assert "regions / whole: median" in done.stdout
