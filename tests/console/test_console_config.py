"""Config file + flags, XDG paths (state dir 0700), default preset choice, weights check."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from console import paths
from console.config import (
    ConfigError,
    EndpointSpec,
    best_preset,
    load_config,
    step_refresh,
    weights_present,
)
from tests.support.model_dirs import diffusers_folder


def test_defaults_one_auto_endpoint_on_10006(console_env: Path) -> None:
    cfg = load_config([])
    assert [(e.port, e.preset, e.gpu) for e in cfg.endpoints] == [(10006, "auto", None)]
    assert cfg.refresh == 1.0 and cfg.spawn is True
    assert cfg.log_dir == console_env / "state" / "logs"


def test_state_dir_is_private_and_env_overrides(console_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = paths.state_dir()
    assert d == console_env / "state"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    d.chmod(0o755)
    paths.state_dir()
    assert stat.S_IMODE(d.stat().st_mode) == 0o700  # tightened again
    monkeypatch.delenv("GEN404_STATE_DIR")
    monkeypatch.delenv("GEN404_CONFIG_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(console_env / "xdgstate"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(console_env / "xdgconf"))
    assert paths.state_dir() == console_env / "xdgstate" / "gen404"
    assert paths.config_file() == console_env / "xdgconf" / "gen404" / "console.yaml"


def test_config_file_then_flags(console_env: Path) -> None:
    cfg_file = paths.config_file()
    cfg_file.parent.mkdir(parents=True)
    cfg_file.write_text(
        "refresh: 2\nlog_dir: /tmp/x-logs\nendpoints:\n"
        "  - {port: 11000, preset: text_mv_fast, gpu: 0}\n  - {port: 11001}\n"
        "keymap:\n  spawn_endpoint: ctrl+n\n"
    )
    cfg = load_config([])
    assert cfg.refresh == 2.0 and cfg.log_dir == Path("/tmp/x-logs")
    assert [(e.port, e.preset, e.gpu) for e in cfg.endpoints] == [
        (11000, "text_mv_fast", "0"),
        (11001, "auto", None),
    ]
    assert cfg.keymap == {"spawn_endpoint": "ctrl+n"}
    # flags win: count, first port, preset for all, GPUs round-robin, refresh, attach
    cfg = load_config(
        ["--endpoints", "3", "--port", "12000", "--preset", "smoke", "--gpus", "0,1", "--refresh", "0.5"]
    )
    assert [(e.port, e.preset, e.gpu) for e in cfg.endpoints] == [
        (12000, "smoke", "0"),
        (12001, "smoke", "1"),
        (12002, "smoke", "0"),
    ]
    assert cfg.refresh == 0.5 and cfg.first_port == 12000
    cfg = load_config(["--endpoint", "13000:text_mv:1", "--endpoint", "13005", "--attach"])
    assert [(e.port, e.preset, e.gpu) for e in cfg.endpoints] == [
        (13000, "text_mv", "1"),
        (13005, "auto", None),
    ]
    assert cfg.spawn is False


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("endpoints:\n  - {port: 1, presett: smoke}\n", "presett"),
        ("refesh: 1\n", "refesh"),
        ("refresh: fast\n", "refresh"),
        ("endpoints: 3\n", "endpoints must be a list"),
    ],
)
def test_bad_config_names_the_key(console_env: Path, text: str, needle: str) -> None:
    f = console_env / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=needle) as err:
        load_config(["--config", str(f)])
    assert str(f) in str(err.value)


def test_bad_flags() -> None:
    with pytest.raises(ConfigError, match="PORT"):
        load_config(["--endpoint", "abc"])
    with pytest.raises(ConfigError, match="between"):
        load_config(["--refresh", "0"])


def test_best_preset() -> None:
    assert best_preset(1, True)[0] == "text_mv_fast"
    preset, why = best_preset(0, True)
    assert preset == "smoke" and "no CUDA GPU" in why
    preset, why = best_preset(2, False)
    assert preset == "smoke" and "gen404 models pull" in why


def test_weights_present_checks_hf_cache_and_models_dir(
    console_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The console asks engine.models (the loader's own lookup), so it agrees with `gen404 serve`."""
    repo = "ashawkey/mvdream-sd2.1-diffusers"  # what the bundled text_mv_fast loads
    monkeypatch.delenv("GEN404_PRESETS_DIR")  # the bundled preset, not console_env's stand-in
    for var in ("GEN404_MODELS_DIR", "GEN404_MVDREAM_ID", "GEN404_MVDREAM_CKPT", "GEN404_SD_ID"):
        monkeypatch.delenv(var, raising=False)
    # huggingface_hub reads $HF_HUB_CACHE once, at import: point its constant at the test's cache
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(console_env / "hf" / "hub"))
    assert weights_present() is False
    cached = console_env / "hf" / "hub" / ("models--" + repo.replace("/", "--"))
    (cached / "snapshots" / "abc").mkdir(parents=True)
    (cached / "refs").mkdir()
    (cached / "refs" / "main").write_text("abc")
    assert weights_present() is False  # an empty snapshot is not weights
    diffusers_folder(cached / "snapshots" / "abc")
    assert weights_present() is True
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(console_env / "empty"))
    models = console_env / "models"
    monkeypatch.setenv("GEN404_MODELS_DIR", str(models))
    assert weights_present() is False
    diffusers_folder(models / repo)
    assert weights_present() is True


def test_refresh_steps() -> None:
    assert step_refresh(1.0, +1) == 2.0 and step_refresh(1.0, -1) == 0.5
    assert step_refresh(0.25, -1) == 0.25 and step_refresh(10.0, +1) == 10.0
    assert step_refresh(1.5, +1) == 2.0


def test_endpoint_name() -> None:
    assert EndpointSpec(10007).name == "gen-10007"
