"""Continuous batching: several generations optimised together, one batched SDS step for all.

Each job keeps what makes its run its own: Gaussians, Adam state, seed, step counter, view plan
(cameras and backgrounds for every step) and densification schedule, plus two random streams
seeded by its seed, exactly as `Generator.generate` seeds them:
  - a CPU generator for init, cameras, backgrounds and split noise;
  - a device generator for the VAE posterior sample and the SDS noise (the single path's
    `guidance.reseed(seed)` stream), drawn in the same order and shapes.
So a job alone draws what the single-job path draws, and its batch-mates never touch its streams.

One `BatchEngine.step()` advances every active job by one iteration:
  one rasterisation of every job's views (jobs differ in Gaussian count: the shorter ones are
  padded with Gaussians of opacity 0, which are culled), then the VAE encoder once over all
  jobs' views, each job's posterior sample and noise from its own stream at its own annealed
  timestep, the CFG UNet once over all rows (per-row text embeddings and timesteps), one
  backward for the summed loss (each job's gradient is its own: the loss is a sum of per-job
  terms over disjoint rows), densification statistics for all jobs at once, one Adam step for
  all (a fused launch per hyperparameter set, each job's moments its own) and, on each job's
  schedule, its densify-and-prune.
The encoder and UNet are per-sample (GroupNorm, convolutions and attention never mix images;
MVDream's cross-view attention mixes only the 4 views of one job), so a job's result does not
depend on its batch-mates beyond floating-point summation order.

Shapes are bucketed (1, 2, 4, 8, ..., max_batch) when `pad_to_bucket` (default on CUDA): rows
are padded with blank views, so the CUDA graphs and compiled code captured at `warmup()` for
each bucket serve every step. A job joins at the next step boundary (`add`) and leaves when its
last step is done (`step()` returns it, exported).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from engine.gaussians import GaussianModel, adam_step_together, view_gradient_stats
from engine.generator import GenerationResult
from engine.guidance import PromptEmbeds, StageTimer
from engine.guidance.sds import SDSGuidance, annealed_timestep
from engine.pipeline import (
    STAGES,
    SUBSTAGES,
    Generator,
    _StageTimer,
    _ViewPlan,
    densify,
    export,
    learning_rates,
    warmup_preset,
)
from engine.presets import Preset
from engine.render import rasterize, rasterize_batch


@contextmanager
def _untimed(stage: str) -> Iterator[None]:
    yield


def buckets_for(max_batch: int) -> list[int]:
    """Batch sizes shapes are padded to: powers of two below max_batch, then max_batch."""
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return [*sizes, max_batch]


def bucket_for(jobs: int, max_batch: int) -> int:
    return next(b for b in buckets_for(max_batch) if b >= jobs)


@dataclass
class BatchJob:
    """One generation inside the batch."""

    id: int
    prompt: str
    seed: int
    iters: int
    gen: torch.Generator  # CPU: init, cameras, backgrounds, split noise
    noise: torch.Generator  # device: posterior sample and SDS noise
    model: GaussianModel
    optimizer: torch.optim.Optimizer
    plan: _ViewPlan
    embeds: PromptEmbeds
    started: float
    step: int = 0  # iterations done
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    notes: list[str] = field(default_factory=list)
    substages: dict[str, float] = field(default_factory=dict)  # with time_substages only

    @property
    def done(self) -> bool:
        return self.step >= self.iters


class BatchEngine:
    """Holds the active jobs of one preset; every method runs on the endpoint's worker thread."""

    def __init__(
        self,
        generator: Generator,
        max_batch: int | None = None,
        preset: Preset | None = None,
        pad_to_bucket: bool | None = None,
    ) -> None:
        if not generator.loaded:
            generator.load()
        self.generator = generator
        self.preset = preset or generator.preset
        self.max_batch = int(max_batch or self.preset.max_batch)
        self.device = generator.device
        self.pad_to_bucket = self.device.type == "cuda" if pad_to_bucket is None else pad_to_bucket
        self.jobs: list[BatchJob] = []
        self.step_timings = dict.fromkeys(STAGES, 0.0)  # last step's stage times (the profile)
        self.time_substages = generator.time_substages  # also time VAE encode and UNet (synced)
        # one rasterization and one fused Adam launch per hyperparameter set for all jobs; off:
        # a loop over jobs (what benchmarks/probes/batch_step.py measures them against)
        self.batch_render = True
        self.merge_optimizers = True
        self._next_id = 1

    @property
    def guidance(self) -> SDSGuidance:
        """The loaded guidance; batching needs SDSGuidance's parts (posterior, predict_noise)."""
        guidance = self.generator.guidance
        if not isinstance(guidance, SDSGuidance):
            raise TypeError(f"continuous batching needs an SDSGuidance, not {type(guidance).__name__}")
        return guidance

    @property
    def free(self) -> int:
        return self.max_batch - len(self.jobs)

    # --- joining ----------------------------------------------------------------------------

    def add(self, prompt: str, seed: int | None = None) -> BatchJob:
        """Start a job; it takes part from the next `step()`. Same init as Generator.generate."""
        if self.free <= 0:
            raise RuntimeError(f"batch full ({self.max_batch} jobs)")
        p, device = self.preset, self.device
        seed = p.seed if seed is None else int(seed)
        timer = _StageTimer(device, self.generator.sync_timings)
        started = time.perf_counter()
        with timer("init"):
            gen = torch.Generator().manual_seed(seed)
            model = GaussianModel.random_init(p.num_pts, gen, device)
            optimizer = model.setup_optimizer(learning_rates(p), fused=p.fused_optimizer)
            self.generator.configure_guidance()
            noise = torch.Generator(device).manual_seed(seed)
            plan = self.generator._plan_views(gen, self.guidance, p.iters)
        with timer("prompt"):
            embeds = self.guidance.encode_prompt(prompt, p.negative_prompt)
        job = BatchJob(
            self._next_id, prompt, seed, p.iters, gen, noise, model, optimizer, plan, embeds, started
        )
        for stage in ("init", "prompt"):
            job.timings[stage] = timer.timings[stage]
        self._next_id += 1
        self.jobs.append(job)
        return job

    def remove(self, job: BatchJob) -> None:
        """Drop a job (cancelled or failed); the others go on."""
        self.jobs = [j for j in self.jobs if j is not job]

    # --- one step for every active job ------------------------------------------------------

    def step(self) -> list[tuple[BatchJob, GenerationResult]]:
        """One iteration of every active job; returns the jobs that finished, exported."""
        jobs = list(self.jobs)
        if not jobs:
            return []
        p = self.preset
        timer = _StageTimer(self.device, self.generator.sync_timings)
        substages = _StageTimer(self.device, True, SUBSTAGES) if self.time_substages else None
        size = p.render_size
        with timer("render"):
            for job in jobs:
                job.model.update_learning_rate(job.step + 1, job.iters)
            images, view_stats = self._render(jobs, size)
        with timer("guidance"):
            loss = self._sds_loss(jobs, images, substages or _untimed)
        with timer("backward"):
            loss.backward()
        finished: list[tuple[BatchJob, GenerationResult]] = []
        in_window = [p.density_start_iter <= job.step + 1 <= p.density_end_iter for job in jobs]
        with timer("densify"):
            if any(in_window):
                for job, window, stats in zip(jobs, in_window, view_stats(), strict=True):
                    if window and stats is not None:
                        job.model.add_view_stats(*stats)
        with timer("optimizer"):
            if self.merge_optimizers:
                adam_step_together([job.optimizer for job in jobs])
            else:
                for job in jobs:
                    job.optimizer.step()
            for job in jobs:
                job.optimizer.zero_grad(set_to_none=True)
        for job, window in zip(jobs, in_window, strict=True):
            job.step += 1
            if window and job.step % p.densification_interval == 0:
                with timer("densify"):
                    densify(job.model, p, job.gen)
        step_timings = {**timer.timings, **(substages.timings if substages is not None else {})}
        for job in jobs:  # each job lived through the whole step
            for stage, seconds in step_timings.items():
                bucket = job.timings if stage in STAGES else job.substages
                bucket[stage] = bucket.get(stage, 0.0) + seconds
        for job in [j for j in jobs if j.done]:
            finished.append((job, self._finish(job)))
            self.remove(job)
        self.step_timings = step_timings
        return finished

    def _render(
        self, jobs: list[BatchJob], size: int
    ) -> tuple[torch.Tensor, Callable[[], list[tuple[torch.Tensor, torch.Tensor] | None]]]:
        """Every job's views at this step, (J*views, 3, H, W), and a function that gives each
        job's densification statistics once backward has run (None where it has no gradients)."""
        if not self.batch_render:  # one rasterization per job (kept to measure against)
            renders, infos = [], []
            for job in jobs:
                m = job.model
                rendered, info = rasterize(
                    m.means, m.quats, m.scales, m.opacities, m.colors,
                    job.plan.viewmats[job.step], job.plan.ks, size, size, job.plan.backgrounds[job.step],
                )  # fmt: skip
                renders.append(rendered.permute(0, 3, 1, 2))
                infos.append(info)

            def loop_stats() -> list[tuple[torch.Tensor, torch.Tensor] | None]:
                return [
                    None
                    if info["means2d"].grad is None
                    else view_gradient_stats(info["means2d"].grad, info["radii"], size, size)
                    for info in infos
                ]

            return torch.cat(renders), loop_stats
        views = jobs[0].plan.ks.shape[0]
        viewmats = torch.stack([job.plan.viewmats[job.step] for job in jobs])
        ks = torch.stack([job.plan.ks for job in jobs])
        backgrounds = torch.stack([job.plan.backgrounds[job.step].expand(views, -1) for job in jobs])
        batch = rasterize_batch(
            *GaussianModel.stacked([job.model for job in jobs]), viewmats, ks, size, size, backgrounds
        )
        images = batch.images.flatten(0, 1).permute(0, 3, 1, 2)  # (J*C, D, H, W)

        def batch_stats() -> list[tuple[torch.Tensor, torch.Tensor] | None]:
            grads = batch.means2d_grads()
            if grads is None:
                return [None] * len(jobs)
            sums, counts = view_gradient_stats(grads, batch.radii, size, size)  # (J, N) each
            return [(sums[k, : len(job.model)], counts[k, : len(job.model)]) for k, job in enumerate(jobs)]

        return images, batch_stats

    def _sds_loss(self, jobs: list[BatchJob], batch: torch.Tensor, stage: StageTimer) -> torch.Tensor:
        """The single path's SDS (guidance.sds_loss) for all jobs at once: encoder and UNet run
        once over every row; noise, timestep and text stay per job."""
        g = self.guidance
        views = self.preset.batch_size
        if views % g.frames:
            raise ValueError(f"SDS: {views} views per job is not a multiple of {g.frames}")
        rows = len(jobs) * views
        pad = 0
        if self.pad_to_bucket:
            pad = (bucket_for(len(jobs), self.max_batch) - len(jobs)) * views
        if pad:
            batch = torch.cat([batch, batch.new_zeros((pad, *batch.shape[1:]))])
        with stage("vae_encode"):
            mean, std = g.posterior(batch)
        latents, noise, noisy, t_rows, conds, uncond, c2ws, cameras = [], [], [], [], [], [], [], []
        for k, job in enumerate(jobs):
            rows_k = slice(k * views, (k + 1) * views)
            m, s = mean[rows_k], std[rows_k]
            # the single path's draws, in its order: posterior sample, then SDS noise
            eps = torch.randn(m.shape, generator=job.noise, device=m.device, dtype=m.dtype)
            lat = (m + s * eps) * g.scaling_factor
            t_value = annealed_timestep(job.step + 1, job.iters, len(g.alphas_cumprod))
            with torch.no_grad():
                n = torch.randn(lat.shape, generator=job.noise, device=lat.device, dtype=lat.dtype)
                noisy.append(g.add_noise(lat.detach(), n, t_value))
            latents.append(lat)
            noise.append(n)
            t_rows.append(torch.full((views,), t_value, device=g.device, dtype=torch.long))
            conds.append(job.embeds.cond.expand(views, -1, -1))
            uncond.append(job.embeds.uncond.expand(views, -1, -1))
            c2ws.append(job.plan.c2w[job.step])
            if job.plan.camera is not None:
                cameras.append(job.plan.camera[job.step])
        if pad:  # blank rows: posterior mean, the first job's timestep, text and cameras
            noisy.append(mean[rows:].detach() * g.scaling_factor)
            t_rows.append(t_rows[0][:1].expand(pad))
            conds.append(conds[0][:1].expand(pad, -1, -1))
            uncond.append(uncond[0][:1].expand(pad, -1, -1))
            c2ws.append(c2ws[0].repeat(pad // views, 1, 1))
            if cameras:
                cameras.append(cameras[0].repeat(pad // views, 1))
        with torch.no_grad():
            embeds = PromptEmbeds(cond=torch.cat(conds), uncond=torch.cat(uncond))
            camera = torch.cat(cameras) if cameras else None
            with stage("unet"):
                eps_hat = g.predict_noise(
                    torch.cat(noisy),
                    torch.cat(t_rows),
                    embeds,
                    torch.cat(c2ws),
                    self.preset.guidance_scale,
                    camera=camera,
                )[:rows]
            grad = torch.nan_to_num(eps_hat.float() - torch.cat(noise).float())
        latent = torch.cat(latents)
        target = latent.detach().float() - grad
        # the sum of the jobs' single-path losses (each divided by its own views)
        return 0.5 * F.mse_loss(latent.float(), target, reduction="sum") / views

    def _finish(self, job: BatchJob) -> GenerationResult:
        timer = _StageTimer(self.device, self.generator.sync_timings)
        with timer("export"):
            splats, added = export(job.model, self.preset, job.gen, job.notes)
        job.timings["export"] += timer.timings["export"]
        return GenerationResult(
            splats=splats,
            timings=dict(job.timings),
            steps=job.iters,
            preset=self.preset.name,
            seed=job.seed,
            grown_to_min=bool(added),
            total_s=time.perf_counter() - job.started,
            notes=job.notes,
            substages=dict(job.substages),
        )

    # --- running to completion (warm-up, tests, benchmarks) ---------------------------------

    def run(
        self,
        prompts: list[str],
        seeds: list[int | None] | None = None,
        on_step: Callable[[], None] | None = None,
    ) -> list[GenerationResult]:
        """All `prompts` started together and stepped until every one is done (results in order)."""
        seeds = seeds or [None] * len(prompts)
        jobs = [self.add(prompt, seed) for prompt, seed in zip(prompts, seeds, strict=True)]
        results: dict[int, GenerationResult] = {}
        while self.jobs:
            for job, result in self.step():
                results[job.id] = result
            if on_step is not None:
                on_step()
        return [results[job.id] for job in jobs]

    def warmup(self, progress: Callable[[float, str], None] | None = None, force: bool = False) -> float:
        """Capture / compile every bucket's shapes with a short run of that many jobs, so no
        request pays for it (Generator.warmup's rules: skipped on the CPU unless compiling; a
        torch.compile failure falls back to eager)."""
        report = progress or (lambda fraction, message: None)

        def buckets() -> None:
            short = BatchEngine(
                self.generator, self.max_batch, warmup_preset(self.preset), self.pad_to_bucket
            )
            for size in buckets_for(self.max_batch):
                report(1.0, f"warming up a batch of {size}")
                short.run([f"warm-up {k}" for k in range(size)])

        return self.generator.warmup(progress, force=force, run=buckets)


__all__ = ["BatchEngine", "BatchJob", "bucket_for", "buckets_for"]
