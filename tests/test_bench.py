"""gen404 bench: the CLI end to end on the smoke preset (CPU), spec parsing, baseline overrides, and
the note on a compile variant measured uncompiled. (The guidance's fast paths are tested in
test_guidance.py, the pipeline's in test_pipeline.py.)"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from engine.bench import BASELINE_OVERRIDES, baseline_of, parse_spec
from engine.cli import main
from engine.presets import PresetError, load_preset

# CPU-sized: a few steps, few points; the export still grows to the gate's 7000
SMALL = ["iters=3", "num_pts=200", "max_gaussians=300", "density_start_iter=1", "densification_interval=2"]


def _small_args() -> list[str]:
    return [arg for item in SMALL for arg in ("--set", item)]


def test_bench_cli_on_smoke_with_baseline_writes_table_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    profile = tmp_path / "prof"
    argv = ["bench", "--presets", "smoke", "--runs", "2", "--baseline", "--device", "cpu"]
    code = main([*argv, "--json", str(out), "--profile", str(profile), *_small_args()])
    assert code == 0
    table = capsys.readouterr().out
    assert "| smoke | optimised | 2 |" in table and "| smoke | baseline | 1 |" in table
    report = json.loads(out.read_text())
    assert report["gpu"] is None and set(report["speedups"]) == {"smoke"}
    opt, base = report["results"]
    assert (opt["variant"], base["variant"]) == ("optimised", "baseline")
    for r in (opt, base):
        assert r["error"] is None and r["gate"] == "ok" and r["ply_valid"] is True
        assert r["splats"] == 7000 and r["ply_bytes"] > 0 and r["spz_bytes"] > 0
        assert r["median_s"] > 0 and all(run["seconds"] >= run["generate_s"] for run in r["runs"])
        assert r["stages"]["total"] > 0 and "spz" in r["stages"]
    # the optimised breakdown splits the guidance into VAE encode and UNet (synced run)
    assert opt["stages"]["vae_encode"] > 0 and opt["stages"]["unet"] > 0
    assert len({run["prompt"] for run in opt["runs"]}) == 2  # a new prompt per run: no cache hits
    assert opt["profile"] and (profile / "profile_smoke.txt").is_file()


def test_bench_no_stages_skips_the_synced_breakdown_run(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = ["bench", "--presets", "smoke", "--runs", "1", "--no-stages", "--device", "cpu"]
    assert main([*argv, "--json", str(out), *_small_args()]) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert result["median_s"] > 0 and result["gate"] == "ok"
    assert result["stages"] == {}  # no extra synced generation was run


def test_bench_cli_rejects_unknown_preset_and_bad_override(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--presets", "no_such_preset", "--device", "cpu"]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert main(["bench", "--presets", "smoke+iters=0", "--device", "cpu"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["bench", "--presets", "smoke", "--set", "nokey", "--device", "cpu"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_spec_overrides_and_baseline_preset() -> None:
    label, preset = parse_spec("text_mv_fast+channels_last=true+iters=10")
    assert label == "text_mv_fast+channels_last=true+iters=10"
    assert preset.channels_last is True and preset.iters == 10 and preset.name == "text_mv_fast"
    fast = load_preset("text_mv_fast")
    assert fast.cuda_graphs and fast.dtype == "bf16"
    base = baseline_of(fast)
    assert {k: getattr(base, k) for k in BASELINE_OVERRIDES} == BASELINE_OVERRIDES
    # everything else (schedule, sizes, seed) is the preset's own: same work, other execution
    assert dataclasses.replace(base, **{k: getattr(fast, k) for k in BASELINE_OVERRIDES}) == fast
    with pytest.raises(PresetError):
        parse_spec("text_mv_fast+cuda_graphs=maybe")


def test_bench_says_when_a_compile_variant_was_measured_uncompiled(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken_compile(module, **kwargs):  # noqa: ANN001, ANN202
        def run(*args, **kw):  # noqa: ANN002, ANN003, ANN202
            raise RuntimeError("no working C compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    argv = ["bench", "--presets", "smoke+compile=true", "--runs", "1", "--no-stages", "--device", "cpu"]
    assert main([*argv, *_small_args()]) == 0
    table = capsys.readouterr().out
    assert "Note: smoke+compile=true [optimised] measured uncompiled" in table
    assert "no working C compiler" in table
