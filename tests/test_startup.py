"""engine/startup.py: libraries an endpoint never uses are hidden from diffusers and transformers,
which import them whenever installed (peft, and through it scikit-learn and scipy: 2.9 s of an H200
endpoint's import), and so is transformers itself until the scorer reveals it. Stand-in `peft`,
`sklearn` and `scipy` packages are installed beside the real libraries; the checks are the
libraries' own, in fresh Python processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from engine.startup import HIDE_ENV

PROBE = """
import json, sys
if sys.argv[1] == "prepared":
    from engine import startup
    startup.prepare()
from diffusers.utils import is_peft_available
from engine import startup
startup.reveal("transformers")
from transformers.utils import is_scipy_available, is_sklearn_available
try:
    import peft
    imported = True
except ModuleNotFoundError:
    imported = False
print(json.dumps({"diffusers_sees_peft": is_peft_available(), "transformers_sees_sklearn": is_sklearn_available(),
                  "transformers_sees_scipy": is_scipy_available(), "peft_imported": imported,
                  "marker": sys.modules.get("peft") is not None}))
"""


def _run(tmp_path: Path, mode: str, **env: str) -> dict[str, bool]:
    site = tmp_path / "site"
    for name in ("peft", "sklearn", "scipy"):
        (site / name).mkdir(parents=True, exist_ok=True)
        (site / name / "__init__.py").write_text("__version__ = '9.9.9'\n")
        # importlib.metadata finds a version, as for an installed distribution
        info = site / f"{'scikit_learn' if name == 'sklearn' else name}-9.9.9.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 9.9.9\n")
    run_env = dict(os.environ, PYTHONPATH=str(site), **env)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, bool] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_model_libraries_see_peft_sklearn_and_scipy_only_without_gen404s_start(tmp_path: Path) -> None:
    plain = _run(tmp_path, "plain")
    assert plain["diffusers_sees_peft"] and plain["transformers_sees_sklearn"] and plain["peft_imported"]
    assert plain["transformers_sees_scipy"]

    prepared = _run(tmp_path, "prepared")
    assert prepared == {
        "diffusers_sees_peft": False,
        "transformers_sees_sklearn": False,
        "transformers_sees_scipy": False,
        "peft_imported": False,
        "marker": False,
    }


def test_the_hidden_list_is_a_setting(tmp_path: Path) -> None:
    nothing_hidden = _run(tmp_path, "prepared", **{HIDE_ENV: ""})
    assert nothing_hidden["diffusers_sees_peft"] and nothing_hidden["transformers_sees_sklearn"]
    only_peft = _run(tmp_path, "prepared", **{HIDE_ENV: "peft"})
    assert not only_peft["diffusers_sees_peft"] and only_peft["transformers_sees_sklearn"]


SCORER_PROBE = """
import json, sys
from engine import startup
startup.prepare()
from diffusers import AutoencoderKL
from diffusers.utils import is_transformers_available
import engine.guidance.mvdream
from engine.pipeline import generate
from engine.presets import load_preset, with_overrides
result = generate("a red chair", with_overrides(load_preset("smoke"), {"iters": 2}))  # the smoke endpoint's path
assert len(result.splats.positions) > 0
before = [name for name in ("transformers", "torchvision") if sys.modules.get(name) is not None]
import torch
from engine.scoring.clip import TINY_MODEL, build_clip
from engine.scoring.quality import TINY_QUALITY_MODEL, build_quality_model
from engine.scoring.similarity import LpipsNet
model = build_quality_model(TINY_QUALITY_MODEL, torch.device("cpu"), random_weights=True)
clip, _ = build_clip(TINY_MODEL, None, torch.device("cpu"), random_weights=True)
print(json.dumps({"diffusers_sees_transformers": is_transformers_available(), "imported_before_scorer": before,
                  "scores": tuple(model(torch.zeros(2, 3, 56, 56)).shape), "clip": type(clip).__name__,
                  "lpips_layers": len(LpipsNet().lins)}))
"""


def test_transformers_and_torchvision_stay_out_of_the_engine_until_the_scorer_reveals_them() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCORER_PROBE], capture_output=True, text=True, timeout=300, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # neither diffusers' models, the MVDream builder nor a smoke generation import them; the
    # scorer's DINOv2 (transformers), CLIP (open_clip, torchvision) and LPIPS (AlexNet) still build
    assert result == {
        "diffusers_sees_transformers": False,
        "imported_before_scorer": [],
        "scores": [2],
        "clip": "CLIP",
        "lpips_layers": 5,
    }
