"""`gen404 models list | pull` and missing-weight errors: offline, with empty or fake caches."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.cli import main
from engine.models import MissingWeightsError, WeightSource, locate, require, requirements
from tests.support.model_dirs import diffusers_folder

REPO_ROOT = Path(__file__).resolve().parents[1]
PORT = "ashawkey/mvdream-sd2.1-diffusers"


@pytest.fixture(autouse=True)
def empty_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HF cache and models dir; no environment overrides leak in."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("GEN404_MODELS_DIR", str(tmp_path / "models"))
    for name in ("GEN404_MVDREAM_ID", "GEN404_MVDREAM_CKPT", "GEN404_SD_ID"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_pull_offline_fails_in_one_line_with_exit_2(empty_caches: Path) -> None:
    env = dict(os.environ, HF_HOME=str(empty_caches / "hf"), HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from engine.cli import main; sys.exit(main())", "models", "pull"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gen404 models: error: cannot download " + PORT)


def test_list_with_empty_cache_names_the_pull_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert f"{PORT} [unet, vae, text_encoder, tokenizer]: missing" in out
    assert "smoke" in out and "ready (tiny random weights)" in out
    assert "gen404 models pull --preset text_mv" in out


def test_list_reports_a_local_folder_with_size_and_ready_presets(
    empty_caches: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    diffusers_folder(empty_caches / "models" / PORT)
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert f"{PORT} [unet, vae, text_encoder, tokenizer]: present" in out and "MB" in out
    assert [line for line in out.splitlines() if line.strip().startswith("text_mv ")][0].endswith("ready")


def test_incomplete_folder_is_not_present(empty_caches: Path) -> None:
    diffusers_folder(empty_caches / "models" / PORT)
    (empty_caches / "models" / PORT / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    assert locate(WeightSource(PORT, ("unet", "vae"))) is None
    assert locate(WeightSource(PORT, ("vae", "tokenizer"))) == empty_caches / "models" / PORT


def test_missing_weights_error_names_model_and_pull_command() -> None:
    from engine.guidance import build_guidance

    preset = SimpleNamespace(name="text_mv", guidance="mvdream", mvdream_id="nobody/no-such-model")
    with pytest.raises(MissingWeightsError) as err:
        build_guidance(preset, "cpu")
    message = str(err.value)
    assert "\n" not in message
    assert "nobody/no-such-model" in message and "`gen404 models pull --preset text_mv`" in message


def test_requirements_follow_guidance_weights_and_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    assert requirements(SimpleNamespace(guidance="tiny_mvdream")) == []
    assert requirements(SimpleNamespace(guidance="mvdream", weights="random")) == []
    (sd,) = requirements(SimpleNamespace(guidance="sd"))
    assert sd.repo_id == "stabilityai/stable-diffusion-2-1-base" and "unet" in sd.components
    monkeypatch.setenv("GEN404_SD_ID", "me/my-sd")
    assert requirements(SimpleNamespace(guidance="sd"))[0].repo_id == "me/my-sd"
    monkeypatch.setenv("GEN404_MVDREAM_CKPT", "/nowhere/sd-v2.1-base-4view.pt")
    ckpt, tokenizer = requirements(SimpleNamespace(guidance="mvdream"))
    assert (ckpt.repo_id, ckpt.filename) == ("MVDream/MVDream", "sd-v2.1-base-4view.pt")
    assert tokenizer.repo_id == "me/my-sd" and tokenizer.components == ("tokenizer",)
    with pytest.raises(MissingWeightsError, match="/nowhere/sd-v2.1-base-4view.pt"):
        require(ckpt, "text_mv")


def test_original_checkpoint_found_in_models_dir(empty_caches: Path) -> None:
    path = empty_caches / "models" / "MVDream" / "MVDream" / "sd-v2.1-base-4view.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    source = WeightSource("MVDream/MVDream", filename="sd-v2.1-base-4view.pt", local_path="/nowhere/x.pt")
    assert locate(source) == path


def test_pull_for_a_random_weight_preset_downloads_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "pull", "--preset", "smoke"]) == 0
    assert "nothing to download" in capsys.readouterr().out
