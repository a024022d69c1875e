"""gen404 bench: the CLI end to end on the smoke preset (CPU), spec parsing, baseline overrides;
on CUDA, the graphed guidance path against the eager one (skipped without a GPU)."""

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


def _tiny_guidance(device: str):
    from types import SimpleNamespace

    from engine.guidance import build_guidance

    return build_guidance(SimpleNamespace(guidance="tiny_mvdream", ref_size=32, seed=3, dtype="fp32"), device)


def _sds_runs(guidance, modes: list[dict[str, bool]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(loss, image gradient) of one SDS step per mode (cuda_graphs / compile), same noise."""
    device = guidance.device
    embeds = guidance.encode_prompt("a chair", "blurry")
    images = torch.rand(4, 3, 48, 48, generator=torch.Generator().manual_seed(0)).to(device)
    c2w = torch.eye(4, device=device).repeat(4, 1, 1)
    c2w[:, 2, 3] = 3.0
    results = []
    for mode in modes:
        guidance.cuda_graphs = mode.get("graphs", False)
        guidance.set_compile(mode.get("compile", False))
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("compiled", [False, True], ids=["graphs", "compiled+graphs"])
def test_graphed_guidance_matches_eager_on_cuda(compiled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # TF32 convolutions (PyTorch's cuDNN default) round differently under inductor's layouts
    # (loss 30.3988 vs 30.3872 on the H200): compare true fp32 arithmetic
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    # eager, capture + replay, replay
    modes = [{}, {"graphs": True, "compile": compiled}, {"graphs": True, "compile": compiled}]
    _assert_same_step(_sds_runs(_tiny_guidance("cuda"), modes))


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


# --- the fast path's pieces, on the CPU ---------------------------------------------------------


def test_densification_stats_equal_the_indexed_accumulation() -> None:
    from engine.gaussians import GaussianModel

    g = torch.Generator().manual_seed(0)
    model = GaussianModel.random_init(50, g)
    means2d = torch.zeros(4, 50, 2, requires_grad=True)
    means2d.grad = torch.randn(4, 50, 2, generator=g)
    radii = (torch.rand(4, 50, generator=g) > 0.3).int() * 3
    model.add_densification_stats(means2d, radii, 64, 48)
    # the former formulation: nonzero() ids and index_add_ (a host sync per step)
    grads = means2d.grad.clone()
    grads[..., 0] *= 64 / 2.0 * 4
    grads[..., 1] *= 48 / 2.0 * 4
    visible = radii > 0
    ids = torch.nonzero(visible)[:, 1]
    accum = torch.zeros(50).index_add_(0, ids, grads[visible].norm(dim=-1))
    count = torch.zeros(50).index_add_(0, ids, torch.ones(len(ids)))
    assert torch.allclose(model.grad_accum, accum, rtol=1e-5) and torch.equal(model.grad_count, count)


def test_view_plan_holds_every_step_on_the_device_in_order() -> None:
    from engine import cameras
    from engine.pipeline import Generator

    preset = dataclasses.replace(load_preset("smoke"), iters=6)
    generator = Generator(preset, device="cpu")
    generator.load()
    plan = generator._plan_views(torch.Generator().manual_seed(3), generator.guidance, preset.iters)
    # the same draws, step by step, as the loop used to make them
    g = torch.Generator().manual_seed(3)
    for i in range(preset.iters):
        c2w = generator._sample_cameras(g, 4)
        background = float(torch.rand(1, generator=g) < 0.5)
        viewmats, ks = cameras.camera_tensors(c2w, preset.fovy, preset.render_size, preset.render_size)
        assert torch.allclose(plan.viewmats[i], viewmats, atol=1e-5) and torch.allclose(plan.ks, ks)
        assert torch.equal(plan.backgrounds[i], torch.full((3,), background))
        assert torch.equal(plan.c2w[i], torch.as_tensor(c2w))
        assert torch.allclose(plan.camera[i], generator.guidance.camera_fn(torch.as_tensor(c2w)))


def test_warmup_is_a_short_run_that_leaves_the_preset_alone() -> None:
    from engine.pipeline import Generator

    preset = dataclasses.replace(load_preset("smoke"), num_pts=200, max_gaussians=300)
    generator = Generator(preset, device="cpu")
    assert generator.warmup() == 0.0  # CPU: nothing to compile or capture
    assert generator.warmup(force=True) > 0.0
    assert generator.preset is preset


def test_fused_adam_is_asked_for_on_cuda_only() -> None:
    from engine.gaussians import GaussianModel, LearningRates

    model = GaussianModel.random_init(10, torch.Generator().manual_seed(0))
    assert not model.setup_optimizer(LearningRates(), fused=True).defaults["fused"]


def test_endpoint_warms_up_after_load_and_switch_and_reports_it() -> None:
    from engine.service.queue import Worker
    from engine.service.runtime import ModelHost

    calls: list[str] = []
    compile_fails_for = {"text_mv_fast"}

    class FakeGenerator:
        device = "cpu"
        random_weights = True
        compile_failure = None

        def __init__(self, preset, device, random_weights) -> None:  # noqa: ANN001
            self.preset = preset

        def load(self, progress) -> None:  # noqa: ANN001
            calls.append("load")

        def warmup(self, progress) -> float:  # noqa: ANN001
            calls.append(f"warmup {self.preset.name}")
            if self.preset.name in compile_fails_for:
                self.compile_failure = "BackendCompilerFailed: no triton"
            return 1.25

        def models_key(self) -> tuple:
            return ("same",)

        def fork(self, preset):  # noqa: ANN001, ANN202
            return FakeGenerator(preset, None, True)

    worker = Worker("test-warmup")
    # random weights: the text_mv presets' pretrained weights are not needed; no warm cache either
    host = ModelHost(worker, "text_mv_fast", factory=FakeGenerator, random_weights=True, use_cache=False)
    try:
        host.start()
        host.builder.submit(lambda: None).result(10)
        assert host.health()["status"] == "ready" and "warm-up 1.2s" in host.health()["message"]
        assert "torch.compile failed, serving uncompiled: BackendCompilerFailed" in host.health()["message"]
        # a switch keeps the models (a fork) but warms up new shapes before it serves them
        ticket = host.switch("text_mv_ultra_fast")
        assert ticket is not None and ticket.reloaded is False
        ticket.future.result(10)
        assert calls == ["load", "warmup text_mv_fast", "warmup text_mv_ultra_fast"]
        assert "torch.compile failed" not in host.health()["message"]
        compile_fails_for.add("text_mv")
        host.switch("text_mv").future.result(10)
        health = host.health()
        assert health["status"] == "ready" and "warm-up 1.2s" in health["message"]
        assert "torch.compile failed, serving uncompiled" in health["message"]
    finally:
        worker.stop()
        host.stop()


def test_warmup_falls_back_to_eager_when_torch_compile_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.pipeline import Generator

    def broken_compile(module, **kwargs):  # noqa: ANN001, ANN202
        def run(*args, **kw):  # noqa: ANN002, ANN003, ANN202
            raise RuntimeError("Cannot find a working triton installation")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    preset = dataclasses.replace(load_preset("smoke"), compile=True, iters=4, num_pts=200)
    generator = Generator(preset, device="cpu")
    generator.warmup(force=True)
    assert generator.compile_failure and "triton" in generator.compile_failure
    assert generator.guidance.compiled is False
    result = generator.generate("a chair")  # later runs stay uncompiled and work
    assert generator.guidance.compiled is False and len(result.splats) >= 7000


def test_warmup_failure_without_compile_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.pipeline import Generator

    generator = Generator(dataclasses.replace(load_preset("smoke"), iters=4), device="cpu")
    generator.load()

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("CUDA error: device-side assert")

    monkeypatch.setattr(generator.guidance, "sds_loss", broken)
    with pytest.raises(RuntimeError, match="device-side assert"):
        generator.warmup(force=True)
    assert generator.compile_failure is None


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
