"""Fidelity: our score and its parts equal those of the subnet's own validation code.

Expected numbers below come from running 404-Repo/three-gen-subnet's validation/ code
(commit 5fc61f1, October 2025) in a scratch environment, on the same views and the same weights:
1. our side rendered the 16 validator views of hamburger.ply, robocop.spz and smoke_car.ply at
   64 px (they are tests/vectors/scoring_views_64.npz) and exported the state dicts of our
   `--random-weights` models (engine.scoring.seeded: the test CLIP gen404-tiny, the test DINOv2
   gen404-tiny-dino, the full LPIPS AlexNet);
2. their `ValidationEngine.validate_text_to_gs(prompt, views)` ran with those state dicts loaded
   into their own classes (open_clip.CLIP, their DINOv2Net over transformers' Dinov2Model,
   torchmetrics 1.5.1's LPIPS and SSIM, pytod 0.0.3's KNN filter), on the shared venv's torch 2.14,
   transformers 5.24, open_clip 3.3 plus `pip install --target` of their pinned torchmetrics and
   pytod. Four changes made it run on a CPU-only box, none to the arithmetic the validators do:
   torchmetrics' AlexNet built without downloading ImageNet weights (ours were loaded over it);
   pytod's `bottomk` replaced by its own `bottomk_cpu` (the original calls `.cuda()`); numpy 1.26's
   float() of a size-1 array given to similarity_scorer (numpy 2 refuses it); and CLIP's CPU
   autocast (bfloat16, which no validator runs: they use float16 autocast on a GPU) switched off,
   keeping their float16 preprocessing. With CPU bfloat16 left on, their alignments moved by up to
   1.2e-2 (scores by up to 2.4e-3) and every other part was unchanged.
Only the numbers are committed.

Tolerance 1e-6 absolute on every value: float32 rounding at these magnitudes is ~6e-8, their final
score is computed in float32 (sigmoid of a float32 tensor), and they run the quality model one
view at a time where we batch; the largest difference measured was 1.2e-7 (smoke_car score).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.scoring.clip import TINY_MODEL
from engine.scoring.scorer import Scorer, ScoreReport

TOLERANCE = 1e-6
PROMPTS = {
    "hamburger.ply": "a hamburger",
    "robocop.spz": "robocop with hammer in one hand",
    "smoke_car.ply": "a red sports car",
}
# their ValidationResponse (score, iqa, alignment_score, ssim, lpips) and their per-view quality
THEIRS = {
    "hamburger.ply": {
        "score": 0.3343777358531952,
        "iqa": 0.2100173532962799,
        "alignment_raw": 0.7574135065078735,
        "ssim": 0.7399700166292654,
        "lpips": 0.9744893657834736,
        "iqa_views": [
            0.208523303,
            0.21436061,
            0.213709861,
            0.21188435,
            0.210810661,
            0.208808318,
            0.206670672,
            0.20996438,
            0.216509402,
            0.210287586,
            0.20911333,
            0.208567023,
            0.210387647,
            0.205357015,
            0.206800312,
            0.208523303,
        ],  # noqa: E501
    },
    "robocop.spz": {
        "score": 0.4569352865219116,
        "iqa": 0.4890795350074768,
        "alignment_raw": 0.3151779941150121,
        "ssim": 0.7707221015866413,
        "lpips": 0.9722993657892584,
        "iqa_views": [
            0.509169698,
            0.511844933,
            0.523198426,
            0.518613517,
            0.505720079,
            0.474570632,
            0.432384282,
            0.412614822,
            0.429295272,
            0.456555426,
            0.506109476,
            0.533121407,
            0.514218807,
            0.49195984,
            0.496726751,
            0.509169698,
        ],  # noqa: E501
    },
    "smoke_car.ply": {
        "score": 0.5744093656539917,
        "iqa": 0.5865627527236938,
        "alignment_raw": 0.427945043359484,
        "ssim": 0.9187748944224525,
        "lpips": 0.9988715943777241,
        "iqa_views": [
            0.595159948,
            0.590918839,
            0.587082267,
            0.582776606,
            0.580622256,
            0.580141485,
            0.578979552,
            0.578249931,
            0.580352426,
            0.581016719,
            0.583895743,
            0.587103188,
            0.592020154,
            0.594902575,
            0.596621215,
            0.595159948,
        ],  # noqa: E501
    },
}


@pytest.fixture(scope="module")
def views(vectors_dir: Path) -> dict[str, torch.Tensor]:
    data = np.load(vectors_dir / "scoring_views_64.npz")
    return {str(n): torch.from_numpy(v) for n, v in zip(data["names"], data["views"], strict=True)}


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    s = Scorer(TINY_MODEL, size=64, device="cpu", random_weights=True)
    s.load()
    return s


def _score_views(scorer: Scorer, images: torch.Tensor, prompt: str) -> ScoreReport:
    report = ScoreReport(prompt=prompt, splats=0, gate_passed=True, gate_reason="")
    scorer.score_views(images, prompt, report, {}, 0.0)
    return report


@pytest.mark.parametrize("name", list(THEIRS))
def test_components_and_score_equal_the_subnets(scorer: Scorer, views: dict, name: str) -> None:
    ours = _score_views(scorer, views[name], PROMPTS[name])
    theirs = THEIRS[name]
    for part in ("iqa", "alignment_raw", "ssim", "lpips", "score"):
        assert getattr(ours, part) == pytest.approx(theirs[part], abs=TOLERANCE), part
    np.testing.assert_allclose(ours.iqa_views, theirs["iqa_views"], atol=TOLERANCE)
    # the parts are not all trivially equal: the outlier filter dropped pairs here
    assert not all(ours.lpips_kept) and not all(ours.ssim_kept)


def test_a_changed_view_moves_the_score(scorer: Scorer, views: dict) -> None:
    """The comparison above can fail: one darkened view changes quality, SSIM and LPIPS."""
    images = views["smoke_car.ply"].clone()
    images[5] = images[5] // 2
    ours = _score_views(scorer, images, PROMPTS["smoke_car.ply"])
    theirs = THEIRS["smoke_car.ply"]
    assert abs(ours.iqa_views[5] - theirs["iqa_views"][5]) > 100 * TOLERANCE
    assert (
        abs(ours.ssim - theirs["ssim"]) > 100 * TOLERANCE
        or abs(ours.lpips - theirs["lpips"]) > 100 * TOLERANCE
    )


def test_scorer_renders_the_committed_views(scorer: Scorer, vectors_dir: Path, views: dict) -> None:
    """End to end from the file: our renders are the views above (the CPU rasterizer may move a
    few pixel values by a level on other CPUs) and the score follows them."""
    report = scorer.score((vectors_dir / "hamburger.ply").read_bytes(), "a hamburger", keep_images=True)
    assert report.images is not None
    diff = np.abs(report.images.numpy().astype(int) - views["hamburger.ply"].numpy().astype(int))
    assert (diff == 0).mean() > 0.999 and diff.max() <= 2
    assert report.score == pytest.approx(THEIRS["hamburger.ply"]["score"], abs=1e-3)
