"""Validator-style scoring on CPU: transform, camera conventions against the validator's own
render, the 16 views, the validity gate through the Scorer, weights handling and `gen404 score`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.cameras import validator_views
from engine.cli import main as cli_main
from engine.formats.ply import read_ply
from engine.scoring.alignment import alignment_from_cosines
from engine.scoring.clip import TINY_MODEL, WeightsMissing
from engine.scoring.formula import final_score
from engine.scoring.scorer import ResultDecodeError, Scorer, decode_result
from engine.scoring.transform import ViewSplats, validator_transform
from engine.scoring.views import render_orbit, render_view_set
from engine.scoring.weights import require_clip, require_lpips, require_quality
from engine.splats import SH_C0, Splats

SIZE = 64  # reduced render size for the 16 views on CPU


@pytest.fixture(scope="module")
def hamburger(vectors_dir: Path) -> Splats:
    return read_ply((vectors_dir / "hamburger.ply").read_bytes())


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    s = Scorer(TINY_MODEL, size=SIZE, device="cpu", random_weights=True)
    s.load()
    return s


@pytest.fixture(scope="module")
def hamburger_report(scorer: Scorer, vectors_dir: Path):
    return scorer.score((vectors_dir / "hamburger.ply").read_bytes(), "a hamburger", keep_images=True)


def _np(vs: ViewSplats) -> ViewSplats:
    return ViewSplats(**{k: v.numpy() if hasattr(v, "numpy") else v for k, v in vars(vs).items()})


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10.0 * np.log10(255.0**2 / mse))


# ---- transform -------------------------------------------------------------------------------


def test_transform_recentres_by_scalar_mean_and_scales_bbox(hamburger: Splats) -> None:
    vs = _np(validator_transform(hamburger))
    extent = vs.means.max(axis=0) - vs.means.min(axis=0)
    assert extent.max() == pytest.approx(1.5, rel=1e-5)
    # one scalar mean over all coordinates, not a per-axis centroid
    expected = (hamburger.positions - hamburger.positions.mean()) * vs.scaling
    np.testing.assert_allclose(vs.means, expected, atol=1e-6)
    assert abs(vs.means.mean()) < 1e-5 and np.abs(vs.means.mean(axis=0)).max() > 1e-3
    np.testing.assert_allclose(vs.scales, hamburger.linear_scales() * vs.scaling, rtol=1e-5)
    np.testing.assert_allclose(vs.opacities, np.clip(hamburger.alphas() / vs.scaling, 0, 1), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vs.quats, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vs.colors, 0.5 + SH_C0 * hamburger.sh_dc, atol=1e-6)


def test_transform_clips_opacities_when_scaling_up() -> None:
    s = Splats.empty(2)
    s.positions[1] = [0.1, 0.0, 0.0]  # bbox 0.1 -> scaling 15: opacity 0.5 / 15
    s.opacities[:] = [0.0, 50.0]
    vs = _np(validator_transform(s))
    assert vs.scaling == pytest.approx(15.0)
    assert vs.opacities[0] == pytest.approx(0.5 / 15.0)
    assert vs.opacities[1] == pytest.approx(1.0 / 15.0)
    vs_down = _np(validator_transform(s, bbox_size=0.01))  # scaling 0.1: alpha / 0.1 clips at 1
    assert vs_down.opacities.max() == 1.0


def test_transform_refuses_degenerate_results() -> None:
    with pytest.raises(ValueError, match="one point"):
        validator_transform(Splats.empty(10))
    s = Splats.empty(3)
    s.positions[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        validator_transform(s)


# ---- cameras against the validator's own render ----------------------------------------------


def test_reference_camera_matches_validator_render(hamburger: Splats, vectors_dir: Path) -> None:
    """hamburger_validator_render.png: 1080 px, azimuth 45, elevation 0, radius 3, bbox 1.0.
    Rendered at 120 px (1080 / 9 keeps cx = W // 2 exact), both compared at 40 px."""
    ref = Image.open(vectors_dir / "hamburger_validator_render.png").convert("RGB").reduce(27)
    ref_np = np.asarray(ref)

    def psnr_of(**kw: float) -> float:
        img = render_orbit(hamburger, radius=3.0, size=120, bbox_size=1.0, **kw).numpy()
        return _psnr(np.asarray(Image.fromarray(img).reduce(3)), ref_np)

    right = psnr_of(elevation=0.0, azimuth=45.0)
    assert right > 26.0
    for wrong in ({"elevation": 0.0, "azimuth": -45.0}, {"elevation": 15.0, "azimuth": 45.0}):
        assert psnr_of(**wrong) < right - 3.0, wrong


# ---- the 16 validator views ------------------------------------------------------------------


def test_sixteen_views_centred_on_white(hamburger_report) -> None:
    images = hamburger_report.images.numpy()
    assert images.shape == (16, SIZE, SIZE, 3) and images.dtype == np.uint8
    corners = np.concatenate(
        [images[:, :4, :4], images[:, :4, -4:], images[:, -4:, :4], images[:, -4:, -4:]], axis=1
    )
    assert corners.min() == 255  # white background, nothing drawn there
    for img in images:
        mask = img.min(axis=-1) < 200
        coverage = mask.mean()
        assert 0.05 < coverage < 0.7
        ys, xs = np.nonzero(mask)
        assert abs(xs.mean() - SIZE / 2) < 0.1 * SIZE and abs(ys.mean() - SIZE / 2) < 0.12 * SIZE
    # azimuth linspace(0, 360, 16): the first and last views are the same camera
    diff = np.abs(images.astype(int) - images[0].astype(int)).mean(axis=(1, 2, 3))
    assert diff[15] < 0.5
    assert diff[1] > 1.0 and diff[8] > diff[1]


def _marker_scene(n_shell: int = 3000, n_marker: int = 150) -> Splats:
    """A grey sphere with a red blob on +x and a blue blob on +y (numpy-seeded)."""
    rng = np.random.default_rng(7)
    shell = rng.normal(size=(n_shell, 3))
    shell = 0.5 * shell / np.linalg.norm(shell, axis=1, keepdims=True)
    red = np.array([0.55, 0.0, 0.0]) + rng.normal(scale=0.04, size=(n_marker, 3))
    blue = np.array([0.0, 0.55, 0.0]) + rng.normal(scale=0.04, size=(n_marker, 3))
    s = Splats.empty(n_shell + 2 * n_marker)
    s.positions[:] = np.concatenate([shell, red, blue])
    rgb = np.concatenate(
        [np.full((n_shell, 3), 0.5), np.tile([1.0, 0, 0], (n_marker, 1)), np.tile([0, 0, 1.0], (n_marker, 1))]
    )
    s.sh_dc[:] = (rgb - 0.5) / SH_C0
    s.opacities[:] = 5.0
    s.scales[:] = np.log(0.06)
    q = rng.normal(size=(len(s), 4))
    s.rotations[:] = q / np.linalg.norm(q, axis=1, keepdims=True)
    return s


def test_view_order_and_axes_follow_the_validator_orbit() -> None:
    """Camera at x = r cos(phi) sin(theta), z = r cos(phi) cos(theta), elevation -15 = above:
    a marker on +x is right of centre at azimuth 0, faces the camera near 90 (view 4 = 96 deg),
    is left of centre at 192 (view 8), hidden at 288 (view 12); +y is up in every view."""
    size = 32
    cams = validator_views(n=16, size=size)
    picked = [0, 4, 8, 12]  # the validator's cameras 0, 4, 8 and 12 of 16 (fewer renders on CPU)
    cams = cams._replace(viewmats=cams.viewmats[picked], Ks=cams.Ks[picked], c2w=cams.c2w[picked])
    images = render_view_set(validator_transform(_marker_scene()), cams).numpy().astype(int)

    def centroid(img: np.ndarray, channel: int) -> tuple[float, float, int]:
        others = [c for c in range(3) if c != channel]
        mask = (img[..., channel] > 150) & (img[..., others].max(axis=-1) < 90)
        ys, xs = np.nonzero(mask)
        return (xs.mean() if len(xs) else np.nan), (ys.mean() if len(ys) else np.nan), int(mask.sum())

    red = [centroid(img, 0) for img in images]
    assert red[0][0] > size * 0.6
    assert abs(red[1][0] - size / 2) < size * 0.1 and red[1][2] > red[0][2]
    assert red[2][0] < size * 0.4
    assert red[3][2] < 0.1 * red[1][2]
    for img in images:
        _, blue_y, blue_n = centroid(img, 2)
        assert blue_n > 0 and blue_y < size * 0.4


# ---- the Scorer: gate, alignment, models loaded once -----------------------------------------


def test_valid_file_scores_through_gate_render_and_clip(scorer: Scorer, hamburger_report) -> None:
    r = hamburger_report
    assert r.gate_passed and r.splats == 52709
    assert len(r.cosines) == 16 and len(r.kept) == 16
    # the cosines are those of the kept renders, and the alignment is the formula on them
    again = scorer.clip.cosines(r.images, "a hamburger")
    np.testing.assert_allclose(r.cosines, again, atol=1e-6)
    expected = alignment_from_cosines(again)
    assert r.kept == expected.kept
    assert r.alignment == pytest.approx(expected.alignment)
    # every part is a number and the score is the subnet's formula on them
    assert r.iqa is not None and r.ssim is not None and r.lpips is not None and r.alignment_raw is not None
    assert len(r.iqa_views) == 16 and r.iqa == pytest.approx(np.mean(r.iqa_views))
    assert len(r.ssim_pairs) == len(r.lpips_pairs) == 16
    assert r.score == pytest.approx(final_score(r.alignment_raw, r.iqa, r.ssim, r.lpips))
    assert r.accepted == (r.score >= 0.6) and (r.reason == "") == r.accepted
    assert {"decode", "gate", "transform", "render", "clip", "quality", "ssim", "lpips", "total"} <= set(
        r.timings
    )
    d = r.to_dict()
    assert "images" not in d and json.loads(json.dumps(d))["cosines"] == r.cosines


def _gate_case(hamburger: Splats, case: str) -> Splats:
    s = Splats(**{k: getattr(hamburger, k).copy() for k in Splats.__dataclass_fields__})
    if case == "too_few":
        keep = slice(0, 6999)
        return Splats(**{k: getattr(s, k)[keep] for k in Splats.__dataclass_fields__})
    if case == "transparent":
        s.opacities[: int(0.81 * len(s))] = -10.0  # alpha 4.5e-5 < 1e-3
    elif case == "identity":
        s.rotations[:] = [1.0, 0.0, 0.0, 0.0]
    elif case == "scaled_identity":  # the validator normalises before comparing
        s.rotations[:] = [2.0, 0.0, 0.0, 0.0]
    return s


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("too_few", "too few"),
        ("transparent", "opacities below"),
        ("identity", "identity"),
        ("scaled_identity", "identity"),
    ],
)
def test_gate_failures_score_zero_without_rendering(
    scorer: Scorer, hamburger: Splats, case: str, reason: str
) -> None:
    report = scorer.score(_gate_case(hamburger, case), "a hamburger")
    assert not report.gate_passed and reason in report.gate_reason
    assert report.score == 0.0 and report.alignment == 0.0 and report.cosines == []
    assert report.iqa is None and report.ssim is None and report.lpips is None
    assert not report.accepted and report.reason.startswith("gate failed")
    assert "render" not in report.timings


def test_model_loads_once(scorer: Scorer, hamburger: Splats) -> None:
    model = scorer.clip._model
    scorer.load()
    scorer.score(_gate_case(hamburger, "identity"), "x")
    assert scorer.clip._model is model


def test_spz_and_ply_decode_to_the_same_result(vectors_dir: Path, hamburger: Splats) -> None:
    from_spz = decode_result((vectors_dir / "hamburger.spz").read_bytes())  # sniffed as SPZ
    assert len(from_spz) == len(hamburger)
    np.testing.assert_allclose(from_spz.positions, hamburger.positions, atol=1.0 / 4096)
    with pytest.raises(ResultDecodeError, match="not a Gaussian PLY"):
        decode_result(b"hello world", 0)
    with pytest.raises(ResultDecodeError, match="not a 404 SPZ"):
        decode_result((vectors_dir / "hamburger.ply").read_bytes(), 2)
    with pytest.raises(ResultDecodeError, match="unsupported compression 1"):
        decode_result(b"", 1)


def test_missing_weights_is_one_actionable_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEN404_MODELS_DIR", str(tmp_path))
    with pytest.raises(WeightsMissing) as info:
        Scorer("convnext_large_d", "laion2b_s26b_b102k_augreg", device="cpu").load()
    msg = str(info.value)
    assert "\n" not in msg
    assert "convnext_large_d/laion2b_s26b_b102k_augreg" in msg and "gen404 models pull" in msg


def test_weights_found_in_models_dir_or_given_as_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEN404_MODELS_DIR", str(tmp_path))
    repo = tmp_path / "laion" / "CLIP-convnext_large_d.laion2B-s26B-b102K-augreg"
    repo.mkdir(parents=True)
    (repo / "open_clip_pytorch_model.bin").write_bytes(b"x")
    found = require_clip("convnext_large_d", "laion2b_s26b_b102k_augreg")
    assert found == repo / "open_clip_pytorch_model.bin"
    (repo / "open_clip_model.safetensors").write_bytes(b"x")  # safetensors preferred
    assert require_clip("convnext_large_d", "laion2b_s26b_b102k_augreg").name == "open_clip_model.safetensors"
    ckpt = tmp_path / "my.ckpt"
    ckpt.write_bytes(b"x")
    assert require_clip("convnext_large_d", str(ckpt)) == ckpt


def _no_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEN404_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def test_missing_quality_and_lpips_weights_name_the_pull_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_caches(tmp_path, monkeypatch)
    monkeypatch.setattr("engine.scoring.weights._torchmetrics_lpips_file", lambda: None)
    for require, needle in ((require_quality, "facebook/dinov2-small"), (require_lpips, "alexnet")):
        with pytest.raises(WeightsMissing) as info:
            require()
        msg = str(info.value)
        assert "\n" not in msg and needle in msg and "gen404 models pull --score" in msg


def test_lpips_loads_torchvision_and_lpips_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real-weights path with files laid out as pulled: AlexNet (torchvision keys, classifier
    included) and the LPIPS linear layers (linK.model.1.weight), in $GEN404_MODELS_DIR/lpips."""
    import torch
    from torchvision.models import alexnet

    from engine.scoring.similarity import ALEX_CHANNELS, build_lpips

    _no_caches(tmp_path, monkeypatch)
    folder = tmp_path / "models" / "lpips"
    folder.mkdir(parents=True)
    torch.manual_seed(1)
    alex = alexnet(weights=None).state_dict()
    torch.save(alex, folder / "alexnet-owt-7be5be79.pth")
    lins = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(ALEX_CHANNELS)}
    torch.save(lins, folder / "alex.pth")
    net = build_lpips(torch.device("cpu"), random_weights=False)
    assert torch.equal(net.features[3].weight, alex["features.3.weight"])
    assert torch.equal(net.lins[4].weight, lins["lin4.model.1.weight"])


def test_quality_checkpoints_load_backbone_then_head(tmp_path: Path) -> None:
    """dinov2's model.safetensors (backbone keys) then the subnet's head file (whole-net keys)."""
    import torch
    from safetensors.torch import save_file

    from engine.scoring.quality import _load_checkpoints, build_quality_model
    from engine.scoring.seeded import seeded_init

    source = seeded_init(build_quality_model("gen404-tiny-dino", torch.device("cpu"), True), 7)
    backbone = {k: v.contiguous() for k, v in source.backbone.state_dict().items()}
    save_file(backbone, tmp_path / "model.safetensors")
    heads = {k: v.contiguous() for k, v in source.state_dict().items() if "_head." in k}
    save_file(heads, tmp_path / "quality_scorer.safetensors")
    target = build_quality_model("gen404-tiny-dino", torch.device("cpu"), True)
    assert not torch.equal(target.score_head.weight, source.score_head.weight)
    _load_checkpoints(
        target, str(tmp_path / "model.safetensors"), str(tmp_path / "quality_scorer.safetensors")
    )
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    save_file({"x": torch.zeros(1)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="no score_head"):
        _load_checkpoints(target, str(tmp_path / "model.safetensors"), str(tmp_path / "other.safetensors"))


def test_random_weights_are_the_same_on_every_build() -> None:
    """Seeded values, independent of the libraries' own init (the fidelity numbers rely on it)."""
    import torch

    a, b = (Scorer(TINY_MODEL, size=SIZE, device="cpu", random_weights=True) for _ in range(2))
    torch.manual_seed(123)  # the global RNG plays no part
    a.load()
    torch.manual_seed(456)
    b.load()
    for left, right in ((a.clip._model, b.clip._model), (a.quality._model, b.quality._model)):
        for (name, x), y in zip(left.state_dict().items(), right.state_dict().values(), strict=True):
            assert torch.equal(x, y), name


# ---- gen404 score ----------------------------------------------------------------------------


def test_cli_score_prints_json_and_summary(
    vectors_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["score", str(vectors_dir / "hamburger.spz"), "--prompt", "a hamburger", "--size", "32"]
    args += ["--save-views", str(tmp_path / "views")]
    args += ["--views", "2", "--model", TINY_MODEL, "--random-weights", "--device", "cpu"]
    assert cli_main(args) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["gate_passed"] and out["splats"] == 52709 and len(out["cosines"]) == 2
    assert out["size"] == 32 and out["model"] == TINY_MODEL and out["quality_model"] == "gen404-tiny-dino"
    for part in ("iqa", "alignment_raw", "ssim", "lpips", "score"):
        assert isinstance(out[part], float), part
    assert out["score"] == pytest.approx(
        final_score(out["alignment_raw"], out["iqa"], out["ssim"], out["lpips"])
    )
    verdict_line = captured.err.splitlines()[0]
    assert verdict_line.startswith(f"score {out['score']:.3f}: ")
    assert ("ACCEPTED" in verdict_line) == out["accepted"] and (out["reason"] in verdict_line)
    for part in ("iqa", "alignment", "ssim", "lpips"):
        assert f"  {part} " in captured.err
    saved = sorted((tmp_path / "views").glob("*.png"))
    assert [p.name for p in saved] == ["view_00.png", "view_01.png"]
    assert Image.open(saved[0]).size == (32, 32)


def test_cli_score_errors_are_one_line(
    vectors_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GEN404_MODELS_DIR", str(tmp_path))
    ply = str(vectors_dir / "hamburger.ply")
    assert cli_main(["score", ply, "--prompt", "a hamburger", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "gen404 models pull" in err
    assert cli_main(["score", str(tmp_path / "missing.ply"), "--prompt", "x"]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert cli_main(["score", ply, "--prompt", "x" * 1025]) == 2
    assert "1024" in capsys.readouterr().err


def test_models_pull_score_finds_local_files_or_fails_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gen404 models pull --score`: every scoring file, by its id; offline it is one line."""
    _no_caches(tmp_path, monkeypatch)

    def offline(timeout: float = 5.0) -> None:
        raise ConnectionError("cannot reach the Hub (test)")

    monkeypatch.setattr("engine.models.check_hub_reachable", offline)
    monkeypatch.setattr("engine.scoring.weights._download_url", lambda url, dest: offline())
    monkeypatch.setattr("engine.scoring.weights._torchmetrics_lpips_file", lambda: None)
    assert cli_main(["models", "pull", "--score"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot download" in err

    root = tmp_path / "models"
    files = [
        "laion/CLIP-convnext_large_d.laion2B-s26B-b102K-augreg/open_clip_model.safetensors",
        "facebook/dinov2-small/model.safetensors",
        "404-Gen/validation/quality_scorer.safetensors",
        "lpips/alexnet-owt-7be5be79.pth",
        "lpips/alex.pth",
    ]
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    assert cli_main(["models", "pull", "--score"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == [
        "clip",
        "quality_backbone",
        "quality_head",
        "lpips_alexnet",
        "lpips_linear",
    ]
    assert all(str(root / name) in line for name, line in zip(files, out, strict=True))
