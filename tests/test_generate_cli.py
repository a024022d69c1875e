"""`gen404 generate`: a real smoke generation end to end, and one-line errors that write nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import main
from engine.formats.ply import read_ply
from engine.gate import check_gate
from engine.pipeline import STAGES

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_smoke_generation_writes_a_gate_passing_ply_and_prints_timings(tmp_path: Path) -> None:
    out = tmp_path / "car.ply"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "GEN404_PRESETS_DIR": str(tmp_path / "none")}
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "generate", "a red sports car", "--preset", "smoke",
         "-o", str(out), "--device", "cpu", "--seed", "3"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    splats = read_ply(out.read_bytes())
    assert len(splats) >= 7000
    assert check_gate(splats).passed
    for stage in (*STAGES, "load models", "generation total"):
        assert stage in proc.stdout
    assert "30/30 steps" in proc.stderr  # progress reached the end (smoke: 30 iterations)
    assert "seed 3" in proc.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["car.ply"]  # no temp file left behind


@pytest.mark.parametrize(
    ("prompt", "preset", "message"),
    [
        ("", "smoke", "prompt is empty"),
        ("  \t ", "smoke", "prompt is only whitespace"),
        ("x" * 1025, "smoke", "1025 characters long"),
        ("a chair", "no_such_preset", "unknown preset 'no_such_preset'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], prompt: str, preset: str, message: str
) -> None:
    out = tmp_path / "out.ply"
    assert main(["generate", prompt, "--preset", preset, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gen404 generate: error:") and message in err
    assert "\n" not in err
    assert not out.exists()


@pytest.mark.parametrize("target", ["a_file/out.ply", "missing_dir/out.ply", "."])
def test_unwritable_output_is_rejected_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    (tmp_path / "a_file").write_text("not a directory")
    monkeypatch.chdir(tmp_path)
    import engine.pipeline

    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("models must not load for an unwritable output")

    monkeypatch.setattr(engine.pipeline.Generator, "load", no_loading)
    assert main(["generate", "a chair", "--preset", "smoke", "-o", target]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err or "is a directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_a_failing_generation_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.formats.ply

    out = tmp_path / "out.ply"
    out.write_bytes(b"previous result")

    def broken_write(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(engine.formats.ply, "write_ply", broken_write)
    monkeypatch.setattr("engine.pipeline.Generator.generate", _fake_generate)
    monkeypatch.setattr("engine.pipeline.Generator.load", lambda self, progress=None: None)
    with pytest.raises(RuntimeError, match="encoder exploded"):
        main(["generate", "a chair", "--preset", "smoke", "-o", str(out), "--device", "cpu"])
    assert out.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["out.ply"]


def _fake_generate(self, prompt, seed=None, on_step=None):  # noqa: ANN001, ANN202
    from engine.pipeline import GenerationResult
    from engine.splats import Splats

    return GenerationResult(Splats.empty(7000), dict.fromkeys(STAGES, 0.0), 1, "smoke", 0, False, 0.1)


def test_missing_pretrained_weights_are_a_one_line_error_naming_the_pull_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEN404_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("GEN404_MVDREAM_ID", "gen404-test/no-such-mvdream")
    monkeypatch.setenv("GEN404_SD_ID", "gen404-test/no-such-sd")
    out = tmp_path / "out.ply"
    assert main(["generate", "a chair", "--preset", "text_mv_fast", "--device", "cpu", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("gen404 generate: error:") and "gen404 models pull" in err
    assert not out.exists()


@pytest.mark.parametrize(("flag", "expected"), [([], False), (["--compile"], True)])
def test_one_shot_generate_skips_the_presets_compile_unless_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: list[str], expected: bool
) -> None:
    # a preset with compile on: compiling costs more than one generation saves
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "compiled_smoke.yaml").write_text("extends: smoke\ncompile: true\n")
    monkeypatch.setenv("GEN404_PRESETS_DIR", str(presets))
    seen: list[bool] = []

    def recording_generate(self, prompt, seed=None, on_step=None):  # noqa: ANN001, ANN202
        seen.append(self.preset.compile)
        return _fake_generate(self, prompt, seed, on_step)

    monkeypatch.setattr("engine.pipeline.Generator.generate", recording_generate)
    monkeypatch.setattr("engine.pipeline.Generator.load", lambda self, progress=None: None)
    argv = ["generate", "a chair", "--preset", "compiled_smoke", "-o", str(tmp_path / "o.ply")]
    assert main([*argv, "--device", "cpu", *flag]) == 0
    assert seen == [expected]
