"""Guidance: SDS protocol on the tiny model, multi-view attention, camera embedding and convention."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from engine.guidance import Guidance, PromptEmbeds, build_guidance, preset_value
from engine.guidance.mvdream_unet import MultiViewAttnProcessor, mvdream_camera
from engine.guidance.regions import regions as regions_of
from engine.guidance.sds import annealed_timestep
from engine.guidance.tiny import ByteTokenizer, tiny_components

TINY = SimpleNamespace(guidance="tiny_mvdream", ref_size=32, seed=7, dtype="fp32")


def _orbit_c2w_opengl(elevation: float, azimuth: float, radius: float) -> np.ndarray:
    """MVDream's own create_camera_to_world_matrix (camera_utils.py): OpenGL axes, y up."""
    el, az = np.radians(elevation), np.radians(azimuth)
    pos = np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])
    forward = -pos / np.linalg.norm(pos)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, up, -forward], axis=1)
    c2w[:3, 3] = pos * radius
    return c2w


def _group_c2w(elevation: float = 10.0, radius: float = 3.0) -> torch.Tensor:
    views = [_orbit_c2w_opengl(elevation, az, radius) for az in (0, 90, 180, 270)]
    return torch.tensor(np.stack(views), dtype=torch.float32)


@pytest.fixture(scope="module")
def guidance() -> Guidance:
    return build_guidance(TINY, "cpu")


def _sds(guidance: Guidance, images: torch.Tensor, step: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    images = images.clone().requires_grad_(True)
    embeds = guidance.encode_prompt("a blue teapot", "blurry")
    loss = guidance.sds_loss(images, _group_c2w(), embeds, step, 100, 7.5)
    loss.backward()
    return loss.detach(), images.grad


def test_sds_loss_is_finite_with_image_gradient(guidance: Guidance) -> None:
    assert isinstance(guidance, Guidance) and guidance.frames == 4
    images = torch.rand(4, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    loss, grad = _sds(guidance, images)
    assert loss.ndim == 0 and math.isfinite(loss.item()) and loss.item() > 0
    assert grad.shape == images.shape  # resized to ref_size inside, gradient flows back
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_sds_is_deterministic_for_a_seed() -> None:
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    runs = [_sds(build_guidance(TINY, "cpu"), images) for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    other = _sds(build_guidance(SimpleNamespace(**{**vars(TINY), "seed": 8}), "cpu"), images)
    assert not torch.equal(other[1], runs[0][1])


def test_sds_loss_value_is_half_grad_norm(guidance: Guidance) -> None:
    # loss = 0.5 * |grad|^2 / B by construction; the latent gradient is exactly (eps_hat - eps) / B
    latents = torch.zeros(4, 4, 4, 4, requires_grad=True)
    guidance.encode_images = lambda images: latents  # type: ignore[method-assign]
    try:
        loss = guidance.sds_loss(
            torch.rand(4, 3, 32, 32), _group_c2w(), guidance.encode_prompt("x", ""), 0, 10, 1.0
        )
        loss.backward()
    finally:
        del guidance.encode_images
    grad = latents.grad * 4  # d loss / d latents = grad / B
    assert grad.abs().sum() > 0
    assert torch.allclose(loss, 0.5 * grad.pow(2).sum() / 4, rtol=1e-4)


def test_encode_prompt_is_cached(guidance: Guidance) -> None:
    first = guidance.encode_prompt("a red chair", "ugly")
    assert isinstance(first, PromptEmbeds) and first.cond.shape == (1, 77, 32)
    again = guidance.encode_prompt("a red chair", "ugly")
    assert again.cond is first.cond and again.uncond is first.uncond  # served from the cache
    assert not torch.equal(guidance.encode_prompt("a green chair", "ugly").cond, first.cond)


def test_prompt_cache_is_bounded_and_keeps_the_negative(guidance: Guidance) -> None:
    from engine.guidance.sds import TEXT_CACHE_SIZE

    negative = guidance.encode_prompt("prompt 0", "blurry").uncond
    for i in range(1, 3 * TEXT_CACHE_SIZE):  # an endpoint: a new prompt on every request
        embeds = guidance.encode_prompt(f"prompt {i}", "blurry")
        assert embeds.uncond is negative  # the shared negative is never re-encoded
    assert len(guidance._text_cache) == TEXT_CACHE_SIZE
    assert "prompt 0" not in guidance._text_cache  # the oldest prompt was evicted


def test_batch_must_be_whole_view_groups(guidance: Guidance) -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        guidance.sds_loss(
            torch.rand(3, 3, 32, 32), _group_c2w()[:3], guidance.encode_prompt("a", ""), 0, 10, 7.5
        )


def test_annealed_timestep_follows_progress_and_clips() -> None:
    assert annealed_timestep(0, 100) == 980
    assert annealed_timestep(50, 100) == 500
    assert annealed_timestep(73, 100) == 270
    assert annealed_timestep(100, 100) == 20


def _unet_outputs(unet: torch.nn.Module, sample: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    context = torch.randn(4, 77, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return unet(sample, torch.full((4,), 500), encoder_hidden_states=context, class_labels=camera).sample


def test_multiview_attention_mixes_views_and_plain_unet_does_not() -> None:
    unet = tiny_components(seed=0)["unet"].eval()
    assert any(isinstance(p, MultiViewAttnProcessor) for p in unet.attn_processors.values())
    camera = mvdream_camera(_group_c2w())
    sample = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    changed = sample.clone()
    changed[0] += 1.0  # perturb only view 0

    base, moved = _unet_outputs(unet, sample, camera), _unet_outputs(unet, changed, camera)
    assert not torch.allclose(base[1:], moved[1:], atol=1e-6)  # views 1-3 saw view 0

    unet.set_attn_processor(AttnProcessor2_0())  # same weights, per-view self-attention (diffusers default)
    base, moved = _unet_outputs(unet, sample, camera), _unet_outputs(unet, changed, camera)
    assert torch.allclose(base[1:], moved[1:], atol=1e-6)
    assert not torch.allclose(base[0], moved[0])


def test_camera_embedding_is_added_to_the_time_embedding() -> None:
    unet = tiny_components(seed=0)["unet"].eval()
    embed = unet.class_embedding
    assert (
        embed.linear_1.in_features == 16
        and embed.linear_2.out_features == unet.time_embedding.linear_2.out_features
    )
    seen: list[torch.Tensor] = []
    resnet = unet.down_blocks[0].resnets[0]
    resnet.time_emb_proj.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    camera = mvdream_camera(_group_c2w())
    sample = torch.randn(4, 4, 8, 8)
    t = torch.full((4,), 500)
    _unet_outputs(unet, sample, camera)
    with torch.no_grad():
        emb = unet.time_embedding(unet.time_proj(t)) + embed(camera)
    assert torch.allclose(seen[0], resnet.nonlinearity(emb), atol=1e-5)


def test_mvdream_camera_matches_mvdream_convention() -> None:
    # camera_utils.get_camera: create_camera_to_world_matrix (unit radius) -> convert_opengl_to_blender
    flip_yz = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=float)
    for elevation, azimuth in [(15.0, 0.0), (-20.0, 90.0), (30.0, 225.0)]:
        expected = (flip_yz @ _orbit_c2w_opengl(elevation, azimuth, 1.0)).reshape(16)
        ours = mvdream_camera(
            torch.tensor(_orbit_c2w_opengl(elevation, azimuth, 3.2), dtype=torch.float32)[None]
        )
        assert np.allclose(ours[0].numpy(), expected, atol=1e-5)
    # z-up world: a camera above the object (positive elevation) has positive z
    assert (
        mvdream_camera(torch.tensor(_orbit_c2w_opengl(30.0, 0.0, 2.0), dtype=torch.float32)[None])[0, 11] > 0
    )


def test_byte_tokenizer_has_hf_call_shape() -> None:
    ids = ByteTokenizer()(
        ["ab", "a longer prompt"], padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    assert ids.shape == (2, 77) and ids.dtype == torch.long
    assert ids[0, :4].tolist() == [1, 3 + ord("a"), 3 + ord("b"), 2] and ids[0, 4:].eq(0).all()
    assert ByteTokenizer()("x" * 500).input_ids.shape == (1, 77)  # truncated


def test_preset_values_come_from_attributes_mappings_or_defaults() -> None:
    assert preset_value(SimpleNamespace(ref_size=64), "ref_size") == 64
    assert preset_value({"guidance": "sd"}, "guidance") == "sd"
    assert preset_value(SimpleNamespace(model_ids={"sd_id": "x/y"}), "sd_id") == "x/y"
    assert preset_value(object(), "mvdream_id") == "ashawkey/mvdream-sd2.1-diffusers"
    with pytest.raises(ValueError, match="unknown guidance"):
        build_guidance(SimpleNamespace(guidance="dalle"), "cpu")


def test_mvdream_camera_from_the_generators_orbit_cameras() -> None:
    from engine.cameras import orbit_c2w

    flip_yz = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=float)
    # the validator's orbit puts negative elevations above the object; MVDream's positive ones
    for elevation, azimuth in [(-15.0, 0.0), (20.0, 135.0)]:
        ours = mvdream_camera(torch.tensor(orbit_c2w(elevation, azimuth, 3.0), dtype=torch.float32)[None])
        expected = flip_yz @ _orbit_c2w_opengl(-elevation, azimuth, 1.0)
        assert np.allclose(ours[0].numpy(), expected.reshape(16), atol=1e-5)


# --- the fast paths (CUDA graphs, torch.compile) against the eager step ----------------------


def _tiny_guidance(device: str):
    from types import SimpleNamespace

    from engine.guidance import build_guidance

    return build_guidance(SimpleNamespace(guidance="tiny_mvdream", ref_size=32, seed=3, dtype="fp32"), device)


def _sds_runs(
    guidance, modes: list[dict[str, Any]], views: int = 4
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(loss, image gradient) of one SDS step over `views` images per mode (cuda_graphs / compile /
    backend), same noise."""
    device = guidance.device
    embeds = guidance.encode_prompt("a chair", "blurry")
    images = torch.rand(views, 3, 48, 48, generator=torch.Generator().manual_seed(0)).to(device)
    c2w = torch.eye(4, device=device).repeat(views, 1, 1)
    c2w[:, 2, 3] = 3.0
    results = []
    for mode in modes:
        guidance.cuda_graphs = mode.get("graphs", False)
        guidance.set_compile(
            mode.get("compile", False), mode.get("backend", "jit"), regions=mode.get("regions", False)
        )
        guidance.reseed(11)
        x = images.clone().requires_grad_(True)
        loss = guidance.sds_loss(x, c2w, embeds, 30, 100, 7.5)
        loss.backward()
        results.append((loss.detach().clone(), x.grad))
    return results


def _assert_same_step(results: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    loss0, grad0 = results[0]
    assert grad0.abs().sum() > 0  # a step that moves the images
    for loss, grad in results[1:]:
        assert torch.allclose(loss, loss0, rtol=1e-4, atol=1e-5)
        assert torch.allclose(grad, grad0, rtol=1e-3, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize(
    "compiled, backend, regions",
    [(False, "jit", False), (True, "jit", False), (True, "aot", False), (True, "aot", True)],
    ids=["graphs", "jit+graphs", "aot+graphs", "aot-regions+graphs"],
)
def test_graphed_guidance_matches_eager_on_cuda(
    compiled: bool, backend: str, regions: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # TF32 convolutions (PyTorch's cuDNN default) round differently under inductor's layouts
    # (loss 30.3988 vs 30.3872 on the H200): compare true fp32 arithmetic
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setenv("GEN404_WARM_CACHE_DIR", str(tmp_path))  # AOT packages: built here
    # eager, capture + replay, replay
    mode = {"graphs": True, "compile": compiled, "backend": backend, "regions": regions}
    modes = [{}, mode, mode]
    _assert_same_step(_sds_runs(_tiny_guidance("cuda"), modes))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_graphs_of_two_shapes_share_a_pool_and_each_still_matches_eager(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batch buckets capture into one pool per kind; replaying the first shape after the second
    was captured (into memory the first one's capture freed) must still give the eager step."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    guidance = _tiny_guidance("cuda")
    eager = {views: _sds_runs(guidance, [{}], views)[0] for views in (4, 8)}
    for views in (4, 8, 4, 8):  # capture 4, capture 8 into the same pools, then replay both
        _assert_same_step([eager[views], *_sds_runs(guidance, [{"graphs": True}], views)])
    assert set(guidance._graph_pools) == {"unet", "vae"}
    assert len(guidance._unet_graphs) == len(guidance._vae_graphs) == 2


def test_encoder_moments_equal_diffusers_posterior() -> None:
    guidance = _tiny_guidance("cpu")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        mean, std = guidance._moments(x)
        posterior = guidance.vae.encode(x).latent_dist
    assert torch.equal(mean, posterior.mean) and torch.equal(std, posterior.std)


def test_compiled_guidance_matches_eager_on_cpu() -> None:
    # the same switch the CUDA presets use, on the CPU backend (inductor's C++ kernels)
    guidance = _tiny_guidance("cpu")
    _assert_same_step(_sds_runs(guidance, [{}, {"compile": True}, {"compile": True}]))
    assert guidance.compiled and hasattr(guidance._unet_fn, "_orig_mod")  # torch.compile's wrapper
    guidance.set_compile(False)
    assert guidance._unet_fn is guidance.unet and guidance._moments_fn is guidance._moments


def test_compiling_one_part_leaves_the_other_eager() -> None:
    # what a compile helper process does: one model's graphs, the other model eager
    guidance = _tiny_guidance("cpu")
    guidance.set_compile(True, "jit", ("unet",))
    assert hasattr(guidance._unet_fn, "_orig_mod") and guidance._moments_fn is guidance._moments
    guidance.set_compile(True, "jit", ("vae",))
    assert guidance._unet_fn is guidance.unet and hasattr(guidance._moments_fn, "_orig_mod")
    with pytest.raises(ValueError, match="unknown compile part 'text'"):
        guidance.set_compile(True, "jit", ("unet", "text"))
    for backend in ("jit", "aot"):  # without regions the UNet compiles whole
        with pytest.raises(ValueError, match="shards only with aot regions"):
            guidance.set_compile(True, backend, ("unet:0/2",))
    guidance.set_compile(True, "aot", ("vae",))  # helpers for an AOT preset: one part's package too
    from engine.guidance.aot import AotModule
    from engine.guidance.regions import PackagedForward, Regional

    assert guidance._unet_fn is guidance.unet and isinstance(guidance._moments_fn, AotModule)
    # an AOT helper of one UNet shard: its blocks' forward is their package, the others' their own
    blocks = regions_of(guidance.unet)
    shards = []
    for shard in range(2):
        guidance.set_compile(True, "aot", (f"unet:{shard}/2",), regions=True)
        assert isinstance(guidance._unet_fn, Regional) and guidance._moments_fn is guidance._moments
        shards.append(
            {name for name, block in blocks if isinstance(block.__dict__.get("forward"), PackagedForward)}
        )
    assert shards[0] and shards[1] and not shards[0] & shards[1]  # each block in one shard
    assert shards[0] | shards[1] == {name for name, _ in blocks}
    guidance.set_compile(True, "aot", ("vae:1/2",), regions=True)  # a VAE encoder shard alone
    assert isinstance(guidance._moments_fn, Regional) and guidance._unet_fn is guidance.unet
    assert not any("forward" in block.__dict__ for _, block in blocks)  # the UNet's restored
    guidance.set_compile(False)
    vae_blocks = regions_of(guidance.vae.encoder)
    assert not any("forward" in block.__dict__ for _, block in blocks + vae_blocks)  # their own again


def test_an_aot_preset_on_a_torch_without_aot_compile_uses_torch_compile(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # presets default to "aot"; a mining box on an older torch still gets inductor's speed
    from engine.guidance import aot

    monkeypatch.setattr(aot, "supported", lambda: False)
    guidance = _tiny_guidance("cpu")
    with caplog.at_level("WARNING", logger="engine.guidance.sds"):
        guidance.set_compile(True, "aot")
    assert hasattr(guidance._unet_fn, "_orig_mod") and hasattr(guidance._moments_fn, "_orig_mod")
    assert "cannot compile ahead of time" in caplog.text


@pytest.mark.parametrize("regions", [False, True], ids=["whole", "regions"])
def test_aot_guidance_matches_eager_on_cpu(
    regions: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the ahead-of-time backend: packages built at the first step (UNet: inference only, whole or
    # block by block; VAE encoder: forward and backward), then a fresh guidance loads them
    from engine.guidance.aot import AotModule
    from engine.guidance.regions import Regional

    monkeypatch.setenv("GEN404_WARM_CACHE_DIR", str(tmp_path))
    aot = {"compile": True, "backend": "aot", "regions": regions}
    guidance = _tiny_guidance("cpu")
    _assert_same_step(_sds_runs(guidance, [{}, aot, aot]))
    unet, moments = guidance._unet_fn, guidance._moments_fn
    assert isinstance(unet, Regional if regions else AotModule)
    assert isinstance(moments, Regional if regions else AotModule)
    # whole models, or block by block in call order (the VAE encoder's gradient through its blocks)
    unet_names, vae_names = ["unet"], ["vae-encoder"]
    if regions:
        unet_names = [f"unet.{name}" for name, _ in regions_of(guidance.unet)]
        vae_names = [f"vae-encoder.{name}" for name, _ in regions_of(guidance.vae.encoder)]
        assert len(unet_names) >= 3 and len(vae_names) >= 2
    assert [r.name for r in unet.reports] == unet_names and [r.name for r in moments.reports] == vae_names
    assert {r.state for r in unet.reports + moments.reports} == {"built"}
    names = unet_names + vae_names
    files = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "aot").iterdir())  # less the digest
    assert files == sorted(names) and all(p.suffix == ".aotc" for p in (tmp_path / "aot").iterdir())
    fresh = _tiny_guidance("cpu")
    _assert_same_step(_sds_runs(fresh, [{}, aot]))
    reports = fresh._unet_fn.reports + fresh._moments_fn.reports
    assert [r.state for r in reports] == ["loaded"] * len(names)
    assert fresh.aot_packages() == guidance.aot_packages() and len(fresh.aot_packages()) == len(names)
