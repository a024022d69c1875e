"""`gen404 models warm`: builds a preset as `gen404 serve` would and says what it saved."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cli import main


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("GEN404_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("GEN404_WARM_CACHE_DIR", str(tmp_path / "warm"))
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "warm_tiny.yaml").write_text("extends: smoke\niters: 2\nnum_pts: 100\nmax_gaussians: 200\n")
    monkeypatch.setenv("GEN404_PRESETS_DIR", str(presets))
    return tmp_path


def test_warm_reports_phases_and_that_an_uncompiled_preset_saves_nothing(
    capsys: pytest.CaptureFixture[str], private_dirs: Path
) -> None:
    assert main(["models", "warm", "--preset", "warm_tiny", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "warm_tiny: warm in " in out and "loading weights" in out
    assert "no compiled artefacts (the preset does not compile)" in out
    assert not (private_dirs / "warm").exists()


def test_warm_skips_a_preset_without_weights_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["models", "warm", "--preset", "text_mv_fast", "--preset", "warm_tiny", "--device", "cpu"]) == 1
    )
    out = capsys.readouterr().out
    assert "text_mv_fast: skipped: MVDream weights" in out
    assert "gen404 models pull --preset text_mv_fast" in out
    assert "warm_tiny: warm in " in out  # the others are still warmed


def test_warm_refuses_an_unknown_preset(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "warm", "--preset", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err


def test_a_compile_helper_s_lines_reach_its_endpoint_through_a_pipe(private_dirs: Path) -> None:
    # a `--part` run (a compile helper) leaves without tearing torch down: what it printed, piped
    # to its endpoint, must arrive all the same, and so must its exit status
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    argv = [sys.executable, "-m", "engine.cli", "models", "warm", "--preset", "text_mv_fast"]
    done = subprocess.run(
        [*argv, "--part", "unet", "--device", "cpu"],
        cwd=repo,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "text_mv_fast: skipped: MVDream weights" in done.stdout
