"""Presets: bundled values, validation errors naming file and key, user override directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine import presets
from engine.presets import PresetError, list_presets, load_preset


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "user_presets"
    d.mkdir()
    monkeypatch.setenv("GEN404_PRESETS_DIR", str(d))
    return d


def test_bundled_presets_carry_the_seed_guide_values(user_dir: Path) -> None:
    assert {"smoke", "text_mv", "text_mv_fast", "text_mv_ultra_fast"} <= set(list_presets())
    q, f, u = load_preset("text_mv"), load_preset("text_mv_fast"), load_preset("text_mv_ultra_fast")
    assert (q.iters, q.ref_size, q.guidance_scale, q.batch_size, q.num_pts, q.warmup_rgb_loss) == (
        1500, 256, 120.0, 4, 8000, True,
    )  # fmt: skip
    assert (f.iters, f.ref_size, f.guidance_scale, f.batch_size, f.num_pts) == (250, 128, 50.0, 4, 4000)
    assert (u.iters, u.ref_size, u.guidance_scale, u.num_pts, u.warmup_rgb_loss) == (
        150,
        64,
        30.0,
        2000,
        False,
    )
    for p in (q, f, u):
        assert p.min_output_gaussians == 7000
        assert p.guidance == "mvdream" and p.weights == "pretrained"
        assert p.negative_prompt
    # the three production presets share their models: switching reloads nothing
    assert q.models_key() == f.models_key() == u.models_key()


def test_smoke_preset_is_tiny_random_and_says_so(user_dir: Path) -> None:
    s = load_preset("smoke")
    assert (s.guidance, s.weights) == ("tiny_mvdream", "random")
    assert "not meaningful output" in s.description
    assert s.iters <= 60 and s.render_size <= 64 and s.ref_size <= 64
    assert s.models_key() != load_preset("text_mv").models_key()


def test_unknown_preset_lists_the_available_ones(user_dir: Path) -> None:
    with pytest.raises(PresetError, match=r"unknown preset 'nope'.*text_mv_fast"):
        load_preset("nope")


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("iter: 100\n", r"bad\.yaml: unknown key 'iter'"),
        ("iters: fast\n", r"bad\.yaml: key 'iters' must be an integer"),
        ("iters: 2.5\n", r"key 'iters' must be an integer"),
        ("warmup_rgb_loss: 1\n", r"key 'warmup_rgb_loss' must be true/false"),
        ("guidance_scale: -1\n", r"key 'guidance_scale' = -1 is out of range"),
        ("min_opacity: 1.5\n", r"key 'min_opacity' = 1.5 is out of range"),
        ("dtype: fp8\n", r"key 'dtype' must be one of fp32, fp16, bf16"),
        ("compile_backend: aoti\n", r"key 'compile_backend' must be one of jit, aot"),
        ("batch_size: 6\n", r"'batch_size' = 6 must be a multiple of 4"),
        ("ref_size: 100\n", r"'ref_size' = 100 must be a multiple of 8"),
        ("- a list\n", r"must be a mapping"),
        ("name: other\n", r"unknown key 'name'"),
    ],
)
def test_invalid_values_fail_naming_file_and_key(user_dir: Path, text: str, pattern: str) -> None:
    (user_dir / "bad.yaml").write_text(text)
    with pytest.raises(PresetError, match=pattern):
        load_preset("bad")


def test_float_keys_accept_yaml_integers(user_dir: Path) -> None:
    (user_dir / "ints.yaml").write_text("guidance_scale: 70\nbatch_size: 8\n")
    p = load_preset("ints")
    assert p.guidance_scale == 70.0 and isinstance(p.guidance_scale, float)
    assert p.batch_size == 8


def test_user_dir_adds_and_overrides_presets(user_dir: Path) -> None:
    (user_dir / "mine.yaml").write_text("extends: text_mv_fast\niters: 300\ndescription: mine\n")
    (user_dir / "text_mv_ultra_fast.yml").write_text("extends: text_mv_ultra_fast\niters: 120\n")
    assert "mine" in list_presets()
    mine = load_preset("mine")
    assert (mine.iters, mine.ref_size, mine.guidance_scale, mine.description) == (300, 128, 50.0, "mine")
    ultra = load_preset("text_mv_ultra_fast")  # the user's file replaces the bundled one...
    assert ultra.iters == 120 and ultra.ref_size == 64  # ...building on it via extends
    assert ultra.description == ""  # a child does not inherit its parent's description


def test_user_override_without_extends_replaces_everything(user_dir: Path) -> None:
    (user_dir / "smoke.yaml").write_text("iters: 7\nguidance: sd\nbatch_size: 1\n")
    s = load_preset("smoke")
    assert (s.iters, s.guidance, s.batch_size) == (7, "sd", 1)
    assert s.weights == "pretrained"  # dataclass default, not the bundled smoke's "random"


def test_extends_cycle_and_unknown_base_are_errors(user_dir: Path) -> None:
    (user_dir / "a.yaml").write_text("extends: b\n")
    (user_dir / "b.yaml").write_text("extends: a\n")
    (user_dir / "c.yaml").write_text("extends: nowhere\n")
    with pytest.raises(PresetError, match="cycle"):
        load_preset("a")
    with pytest.raises(PresetError, match=r"c\.yaml: 'extends' names unknown preset 'nowhere'"):
        load_preset("c")


def test_user_dir_from_xdg_config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEN404_PRESETS_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    d = tmp_path / "gen404" / "presets"
    d.mkdir(parents=True)
    (d / "xdg.yaml").write_text("iters: 5\n")
    assert presets.user_dir() == d
    assert load_preset("xdg").iters == 5


def test_bundled_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_dir: Path) -> None:
    (tmp_path / "only.yaml").write_text("iters: 3\n")
    monkeypatch.setenv("GEN404_BUNDLED_PRESETS", str(tmp_path))
    assert list_presets() == ["only"]


def test_models_key_ignores_optimisation_settings(user_dir: Path) -> None:
    (user_dir / "a.yaml").write_text("extends: text_mv\niters: 10\nguidance_scale: 7\nnum_pts: 100\n")
    (user_dir / "b.yaml").write_text("extends: text_mv\ndtype: fp16\n")
    base = load_preset("text_mv").models_key()
    assert load_preset("a").models_key() == base
    assert load_preset("b").models_key() != base


def test_presets_module_does_not_import_torch() -> None:
    code = "import sys, engine.presets as p; p.load_preset('text_mv'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
