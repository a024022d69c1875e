"""Text-to-3D generation: Gaussians optimised by score distillation (SDS) under a guidance model.

One step (DreamGaussian / the 404 reference, with the seed guide's keys made real):
  sample `batch_size` orbit views (groups of 4 views 90 degrees apart for MVDream), one random
  white-or-black background, rasterise at `render_size`, SDS from the guidance (which resizes to
  `ref_size` for the VAE and applies `guidance_scale`), backward, Adam, and on the preset's
  schedule densify (clone/split by view-space gradient) and prune.
At the end: prune faint Gaussians, grow to `min_output_gaussians` if short, export `Splats`.

`warmup_rgb_loss`: in the reference it ramps an image-reconstruction (RGB MSE) loss weight with
progress; that loss needs an input image, and a text prompt has none, so for text-to-3D the key
is accepted and does nothing (it is logged at debug level). Every stage is timed.

Speed (docs/benchmarks.md): every camera and background of the run is drawn at init and moved to
the device in one transfer, so the step loop issues no host synchronisation of its own (gsplat's
tile binning still reads one count per render); with `sync_timings=False` the stage times are
host-side only and the GPU runs behind the CPU. The guidance's CUDA graphs and the fused
optimiser follow the preset (`cuda_graphs`, `fused_optimizer`, `channels_last`, `compile`).
`Generator.warmup()` captures/compiles everything a generation of the preset needs.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from engine import cameras
from engine.gate import check_gate
from engine.gaussians import GaussianModel, LearningRates
from engine.generator import GenerationResult, ProgressCallback, StepCallback
from engine.guidance import Guidance
from engine.presets import COMPILE_PARTS, Preset, load_preset
from engine.splats import Splats

log = logging.getLogger("gen404.pipeline")

STAGES = ("init", "prompt", "render", "guidance", "backward", "optimizer", "densify", "export")

SUBSTAGES = ("vae_encode", "unet")  # inside "guidance", timed only with `time_substages`

__all__ = ["STAGES", "SUBSTAGES", "GenerationResult", "Generator", "generate", "resolve_device"]


@dataclass
class _ViewPlan:
    """Every step's cameras and background, on the device (first axis: step)."""

    viewmats: torch.Tensor  # (S,B,4,4) world->camera, OpenCV
    ks: torch.Tensor  # (B,3,3)
    c2w: torch.Tensor  # (S,B,4,4) OpenGL camera->world
    backgrounds: torch.Tensor  # (S,3) all ones or all zeros
    camera: torch.Tensor | None  # (S,B,16) the guidance's camera input, when it has one


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class _StageTimer:
    """Wall time per stage; on CUDA it synchronises at stage edges so the split is honest."""

    def __init__(self, device: torch.device, sync: bool, stages: tuple[str, ...] = STAGES) -> None:
        self.timings = dict.fromkeys(stages, 0.0)
        self._sync = sync and device.type == "cuda"

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if self._sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self._sync:
                torch.cuda.synchronize()
            self.timings[stage] += time.perf_counter() - start


class Generator:
    """Holds the loaded guidance model; generate() may be called many times.
    Implements engine.generator.GeneratorProtocol."""

    def __init__(
        self,
        preset: Preset,
        device: str | None = None,
        random_weights: bool = False,
        sync_timings: bool = True,
    ) -> None:
        self.preset = preset
        self._device_arg = device
        self.device = resolve_device(device or preset.device)
        self.random_weights = random_weights
        self.sync_timings = sync_timings
        self.time_substages = False  # the stage-timing hook `gen404 bench` uses (see SUBSTAGES)
        self.guidance: Guidance | None = None
        self._loaded_key: tuple[object, ...] | None = None
        # set when torch.compile failed in warmup(): later runs go without it (see warmup)
        self.compile_failure: str | None = None
        # which models compile when the preset compiles: both, except in a compile helper process
        # (engine/service/compile_helpers.py), which builds one model's artefacts
        self.compile_parts: tuple[str, ...] = COMPILE_PARTS

    def _key_for(self, preset: Preset) -> tuple[object, ...]:
        device = resolve_device(self._device_arg or preset.device)
        random = self.random_weights or preset.weights == "random"
        ids = (preset.mvdream_id, preset.mvdream_ckpt, preset.sd_id)
        # random weights are seeded by the preset seed, so then the seed picks the model too
        return (preset.guidance, random, *ids, preset.dtype, str(device), preset.seed if random else None)

    def models_key(self) -> tuple[object, ...]:
        return self._key_for(self.preset)

    @property
    def loaded(self) -> bool:
        return self.guidance is not None

    def load(self, progress: ProgressCallback | None = None) -> Guidance:
        from engine.guidance import build_guidance

        report = progress or (lambda fraction, message: None)
        p = self.preset
        report(
            0.0, f"loading {p.guidance} guidance ({'random' if self.random_weights else p.weights} weights)"
        )
        self.guidance = None  # free the old model before building the next
        self.device = resolve_device(self._device_arg or p.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = p.cudnn_benchmark  # static shapes per preset: timed once
        self.guidance = guidance = build_guidance(p, self.device, random_weights=self.random_weights)
        self._loaded_key = self.models_key()
        report(1.0, "ready")
        return guidance

    def warmup(
        self,
        progress: ProgressCallback | None = None,
        force: bool = False,
        run: Callable[[], object] | None = None,
    ) -> float:
        """Run a short generation of the current preset: gsplat's kernels, cuDNN algorithm
        choice, CUDA-graph capture, the fused optimiser and densification all happen here, so the
        first request is as fast as the rest. Returns the seconds it took. On the CPU there is
        nothing to capture: skipped unless `force` or the preset compiles. If torch.compile
        fails here, runs go on without it (`compile_failure` says why). `run` replaces the
        short generation (the batched path warms every batch bucket); it runs while
        `self.preset` is the short preset."""
        if not self.loaded:
            self.load(progress)
        if self.device.type != "cuda" and not force and not self._compiling():
            return 0.0
        report = progress or (lambda fraction, message: None)
        report(1.0, "warming up (CUDA graphs, kernels)")
        started = time.perf_counter()
        p = self.preset
        self.preset = warmup_preset(p)
        work = run or (lambda: self.generate("warm-up", seed=p.seed))
        try:
            try:
                work()
            except Exception as exc:
                if not self._compiling():
                    raise
                # torch.compile needs a working Triton and C compiler on the box; without them
                # (or on any compile error) the endpoint still serves, uncompiled and slower
                self.compile_failure = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                log.warning(
                    "torch.compile failed, running without it: %s",
                    self.compile_failure,
                    exc_info=log.isEnabledFor(logging.DEBUG),  # the traceback, when asked for
                )
                report(1.0, f"torch.compile failed ({self.compile_failure}); warming up without it")
                work()
        finally:
            self.preset = p
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._mark_aot_packages()
        seconds = time.perf_counter() - started
        report(1.0, f"warmed up in {seconds:.1f}s")
        return seconds

    def _mark_aot_packages(self) -> None:
        """After a warm-up on AOT packages, note which ones the preset calls: the next start here
        then loads them and is ready at once, instead of serving early (engine/service/runtime.py).
        Nothing is recorded when it ran on none (another backend, or a failed build: eager now),
        nor for a compile helper's warm-up of one part (the preset's other part has none)."""
        packages: list[str] = getattr(self.guidance, "aot_packages", list)()
        if packages and set(self.compile_parts) == set(COMPILE_PARTS):
            from engine.guidance.aot import mark_preset_ready

            try:
                mark_preset_ready(self.preset, self.device, packages)
            except OSError as exc:  # an unwritable state dir costs the next start seconds, no more
                log.warning("could not record the AOT packages of %s: %s", self.preset.name, exc)

    def _compiling(self) -> bool:
        """Whether runs use torch.compile: the preset asks and it has not failed here."""
        return self.preset.compile and self.compile_failure is None

    def can_share(self, preset: Preset) -> bool:
        """Whether `preset` can run on this generator's loaded models through `fork()`: the same
        models_key and the same weight layout (channels_last on CUDA), which a fork must not change."""
        if not self.loaded or self._key_for(preset) != self._loaded_key:
            return False
        cuda = self.device.type == "cuda"
        return (preset.channels_last and cuda) == (self.preset.channels_last and cuda)

    def fork(self, preset: Preset) -> Generator:
        """A generator for `preset` on these very models (no copy; see can_share) with per-run
        state of its own, so it can warm up on another thread while this one keeps generating:
        the preset switch of a serving endpoint (engine/service/switch.py)."""
        twin = type(self)(preset, self._device_arg, self.random_weights, self.sync_timings)
        fork = getattr(self.guidance, "fork", None)
        twin.guidance = fork() if callable(fork) else self.guidance
        twin.device = self.device
        twin._loaded_key = self._loaded_key
        return twin

    def set_preset(self, preset: Preset, progress: ProgressCallback | None = None) -> bool:
        """Switch preset; reload models only if they differ. True when models were reloaded."""
        reload = self.loaded and self._key_for(preset) != self._loaded_key
        self.preset = preset
        if reload:
            self.load(progress)
        return reload

    def configure_guidance(self) -> Guidance:
        """Apply the preset's per-run guidance settings (shared by the batched path)."""
        guidance = self.guidance if self.guidance is not None else self.load()
        p = self.preset
        guidance.ref_size = p.ref_size  # presets sharing models may differ in ref_size
        guidance.cuda_graphs = p.cuda_graphs
        guidance.set_channels_last(p.channels_last and self.device.type == "cuda")
        guidance.set_compile(
            self._compiling(), self.preset.compile_backend, self.compile_parts, self.preset.compile_regions
        )
        return guidance

    def generate(
        self, prompt: str, seed: int | None = None, on_step: StepCallback | None = None
    ) -> GenerationResult:
        guidance = self.guidance if self.guidance is not None else self.load()
        p = self.preset
        seed = p.seed if seed is None else int(seed)
        iters = p.iters
        device = self.device
        timer = _StageTimer(device, self.sync_timings)
        substages = _StageTimer(device, True, SUBSTAGES) if self.time_substages else None
        notes: list[str] = []
        started = time.perf_counter()

        with timer("init"):
            # one CPU generator drives init, cameras, backgrounds and split noise: same seed, same run
            gen = torch.Generator().manual_seed(seed)
            model = GaussianModel.random_init(p.num_pts, gen, device)
            optimizer = model.setup_optimizer(learning_rates(p), fused=p.fused_optimizer)
            self.configure_guidance()
            guidance.reseed(seed)
            plan = self._plan_views(gen, guidance, iters)
        if p.warmup_rgb_loss:
            log.debug("warmup_rgb_loss: no reference image for a text prompt; nothing to warm up")

        with timer("prompt"):
            embeds = guidance.encode_prompt(prompt, p.negative_prompt)

        from engine.render import rasterize

        size = p.render_size
        for step in range(1, iters + 1):
            i = step - 1
            model.update_learning_rate(step, iters)
            with timer("render"):
                images, info = rasterize(
                    model.means,
                    model.quats,
                    model.scales,
                    model.opacities,
                    model.colors,
                    plan.viewmats[i],
                    plan.ks,
                    size,
                    size,
                    plan.backgrounds[i],
                )
                images = images.permute(0, 3, 1, 2)  # (B,3,H,W) for the guidance
            with timer("guidance"):
                camera = None if plan.camera is None else plan.camera[i]
                loss = guidance.sds_loss(
                    images, plan.c2w[i], embeds, step, iters, p.guidance_scale, camera=camera, timer=substages
                )
            with timer("backward"):
                loss.backward()
            in_window = p.density_start_iter <= step <= p.density_end_iter
            with timer("densify"):
                if in_window:
                    model.add_densification_stats(info["means2d"], info["radii"], size, size)
            with timer("optimizer"):
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if in_window and step % p.densification_interval == 0:
                with timer("densify"):
                    result = densify(model, p, gen)
                log.debug("step %d densify: %s", step, result)
            if on_step is not None:
                on_step(step, iters)

        with timer("export"):
            splats, added = export(model, p, gen, notes)
        return GenerationResult(
            splats=splats,
            timings=timer.timings,
            steps=iters,
            preset=p.name,
            seed=seed,
            grown_to_min=bool(added),
            total_s=time.perf_counter() - started,
            notes=notes,
            substages=substages.timings if substages is not None else {},
        )

    def _plan_views(self, gen: torch.Generator, guidance: Guidance, iters: int) -> _ViewPlan:
        """Draw every step's cameras and background (same per-step order as drawing them in the
        loop) and move them to the device in one copy: the loop then never waits on the host."""
        p = self.preset
        orbit = np.empty((iters, p.batch_size, 3))  # elevation, azimuth, radius of every view
        backgrounds = np.empty(iters, np.float32)
        for i in range(iters):  # the draws stay per step, in the loop's order; the poses do not
            orbit[i] = self._draw_views(gen, guidance.frames)
            backgrounds[i] = float(torch.rand(1, generator=gen) < 0.5)
        c2w = cameras.orbit_c2w(orbit[..., 0], orbit[..., 1], orbit[..., 2]).astype(np.float32)
        viewmats = cameras.c2w_to_viewmat(c2w).astype(np.float32)
        ks = np.broadcast_to(cameras.intrinsics(p.fovy, p.render_size, p.render_size), (p.batch_size, 3, 3))
        host = np.concatenate([viewmats.ravel(), c2w.ravel(), ks.astype(np.float32).ravel(), backgrounds])
        flat = torch.from_numpy(host).to(self.device)
        n = iters * p.batch_size * 16
        c2w_device = flat[n : 2 * n].view(iters, p.batch_size, 4, 4)
        camera = guidance.camera_inputs(c2w_device.reshape(-1, 4, 4))
        return _ViewPlan(
            viewmats=flat[:n].view(iters, p.batch_size, 4, 4),
            ks=flat[2 * n : 2 * n + p.batch_size * 9].view(p.batch_size, 3, 3),
            c2w=c2w_device,
            backgrounds=flat[2 * n + p.batch_size * 9 :, None].expand(iters, 3),
            camera=None if camera is None else camera.reshape(iters, p.batch_size, -1),
        )

    def _draw_views(self, gen: torch.Generator, frames: int) -> np.ndarray:
        """One step's (batch_size, 3) elevation, azimuth, radius: 4-view groups for multi-view
        guidance, else independent views."""
        p = self.preset
        radius_range, elevation_range = (p.radius_min, p.radius_max), (p.elevation_min, p.elevation_max)
        if frames == 4:
            return cameras.orbit_group_views(gen, p.batch_size, radius_range, elevation_range)
        u = torch.rand((p.batch_size, 3), generator=gen, dtype=torch.float64).numpy()
        elevation = elevation_range[0] + u[:, 0] * (elevation_range[1] - elevation_range[0])
        radius = radius_range[0] + u[:, 1] * (radius_range[1] - radius_range[0])
        azimuth = -180.0 + 360.0 * u[:, 2]
        return np.stack([elevation, azimuth, radius], -1)


def warmup_preset(p: Preset) -> Preset:
    """A short run of `p` that still reaches every stage (densification included)."""
    iters = min(p.iters, 8)
    return dataclasses.replace(
        p,
        iters=iters,
        density_start_iter=1,
        density_end_iter=iters,
        densification_interval=max(1, iters // 2),
    )


def densify(model: GaussianModel, p: Preset, gen: torch.Generator) -> object:
    """The preset's densify-and-prune, drawing split noise from the run's generator."""
    return model.densify_and_prune(
        p.densify_grad_threshold,
        p.densify_scale_threshold,
        p.min_opacity,
        p.prune_max_scale,
        p.max_gaussians,
        gen,
    )


def export(model: GaussianModel, p: Preset, gen: torch.Generator, notes: list[str]) -> tuple[Splats, int]:
    """Final prune, grow to `min_output_gaussians`, gate check; returns (splats, Gaussians added)
    and appends what happened to `notes`."""
    pruned = model.prune(p.min_opacity)
    before = len(model)
    added = model.grow_to(p.min_output_gaussians, gen)
    splats = model.to_splats()
    if pruned:
        notes.append(f"final prune removed {pruned} Gaussians below opacity {p.min_opacity:g}")
    if added:
        message = (
            f"grew from {before} to {len(splats)} Gaussians (min_output_gaussians {p.min_output_gaussians})"
            " by splitting the largest"
        )
        notes.append(message)
        log.info(message)
    verdict = check_gate(splats)
    if not verdict.passed:
        notes.append(f"validator gate would fail: {verdict.reason}")
        log.warning("validator gate would fail: %s", verdict.reason)
    return splats, added


def learning_rates(p: Preset) -> LearningRates:
    return LearningRates(
        position_init=p.lr_position_init,
        position_final=p.lr_position_final,
        feature=p.lr_feature,
        opacity=p.lr_opacity,
        scaling=p.lr_scaling,
        rotation=p.lr_rotation,
    )


def generate(prompt: str, preset: Preset | str, seed: int | None = None) -> GenerationResult:
    """One-shot convenience: load the preset's models and generate once."""
    if isinstance(preset, str):
        preset = load_preset(preset)
    return Generator(preset).generate(prompt, seed=seed)
