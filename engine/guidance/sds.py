"""Score distillation sampling shared by MVDream and SD guidance.

Reference SDS (the subnet's generator, DreamGaussian's MVDream guidance): renders resized to
`ref_size`, VAE-encoded (posterior sample x scaling factor), one annealed timestep
t = round((1 - step/total_steps) * 1000) clipped to [20, 980], DDIM-scheduler noising, UNet on
[cond, uncond] with classifier-free guidance, gradient eps_hat - eps with weighting w(t) = 1.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F

from engine import compile_keys
from engine.guidance import PromptEmbeds, StageTimer
from engine.guidance.cfg import guided_eps
from engine.guidance.configs import Components
from engine.guidance.layout_norm import use_layout_group_norm
from engine.guidance_spec import GuidanceSpec
from engine.presets import COMPILE_BACKENDS, COMPILE_PARTS, parse_compile_part

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from diffusers import AutoencoderKL

    from engine.guidance.graphs import GraphedCFG

Moments = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # images -> (mean, std)

T_MIN, T_MAX = 20, 980
TEXT_CACHE_SIZE = 32  # encoded texts kept on the device (prompts repeat in tests and benches only)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r} (expected fp32, fp16 or bf16)") from None


def annealed_timestep(step: int, total_steps: int, num_train_timesteps: int = 1000) -> int:
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    t = round((1.0 - progress) * num_train_timesteps)
    return int(min(max(t, T_MIN), T_MAX))


class EncoderMoments(torch.nn.Module):
    """Images in [-1, 1] -> (mean, std) of the VAE posterior, computed as diffusers'
    `AutoencoderKL.encode` and `DiagonalGaussianDistribution` compute them (no tiling: ref sizes
    are far below the tile size). One module for the eager, graphed and compiled paths; the
    sample (mean + std * noise) is drawn by the caller from the guidance's generator."""

    def __init__(self, vae: AutoencoderKL) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        moments = self.vae.encoder(x)
        quant_conv = getattr(self.vae, "quant_conv", None)
        if quant_conv is not None:
            moments = quant_conv(moments)
        mean, logvar = torch.chunk(moments, 2, dim=1)
        return mean, torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))


def use_math_vae_attention(vae: AutoencoderKL) -> None:
    """The VAE's mid-block attention as plain matmuls + softmax (diffusers' AttnProcessor).

    Why: its head is 512 wide, past what the flash kernels take, so SDPA falls back to the
    memory-efficient kernel, whose backward took 1.47 ms a step at text_mv's 256 px (H200
    profile); the attention matrix is only 1024 x 1024 per view. Softmax stays upcast to fp32.
    """
    if hasattr(vae, "set_attn_processor"):
        from diffusers.models.attention_processor import AttnProcessor

        vae.set_attn_processor(AttnProcessor())


def _untimed(stage: str) -> contextlib.nullcontext[None]:
    return contextlib.nullcontext()


def _frozen(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    # nn.Module.to, not ModelMixin.to: the latter warns on every dtype cast
    torch.nn.Module.to(module, device, dtype)
    return module.eval().requires_grad_(False)


class SDSGuidance:
    """Guidance protocol over diffusers components (tokenizer, text encoder, VAE, UNet, DDIM).

    `camera_fn` maps our OpenGL c2w (B,4,4) to the UNet's `class_labels` (MVDream's camera
    embedding); None for plain SD, whose UNet takes no camera.
    """

    def __init__(
        self,
        *,
        tokenizer: Any,
        text_encoder: torch.nn.Module,
        vae: AutoencoderKL,
        unet: torch.nn.Module,
        scheduler: Any,
        frames: int,
        ref_size: int,
        device: str | torch.device,
        dtype: torch.dtype = torch.float32,
        camera_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        seed: int = 0,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.frames = frames
        self.ref_size = ref_size
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        self.camera_fn = camera_fn
        # text encoder stays fp32 (run once per prompt; keeps the conditioning exact)
        self.text_encoder = _frozen(text_encoder, self.device, torch.float32)
        self.vae = _frozen(vae, self.device, dtype)
        use_math_vae_attention(self.vae)
        use_layout_group_norm(self.vae)  # compiled backward without layout copies (layout_norm.py)
        self.unet = _frozen(unet, self.device, dtype)
        self.scaling_factor = float(getattr(vae.config, "scaling_factor", 0.18215))
        self.alphas_cumprod = scheduler.alphas_cumprod.to(self.device, torch.float32)
        # host copy: noising coefficients become Python scalars (no per-step H2D copy, no sync)
        self._alphas_host = [float(a) for a in scheduler.alphas_cumprod.double()]
        self.generator = torch.Generator(self.device)
        self.reseed(seed)
        # Text embeddings by text, least recently used first. Bounded: a serving endpoint sees a
        # new prompt on nearly every request, and each entry lives on the device. The negative
        # prompt is one entry shared by every prompt, so it stays hot.
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        # fast path: UNet and VAE encoder replayed as CUDA graphs (CUDA only), one per shape, and
        # optionally compiled (any device); `_unet_fn` / `_moments_fn` are what every path calls
        self.cuda_graphs = False
        self.channels_last = False
        self.compiled = False
        self.compile_backend = "jit"  # "jit": torch.compile; "aot": packages compiled once (aot.py)
        self.compile_parts = COMPILE_PARTS  # which of the UNet and VAE encoder compile
        self.compile_regions = False  # aot: the models block by block (regions.py)
        self._moments = EncoderMoments(self.vae)
        self._unet_fn: Callable[..., Any] = self.unet
        self._moments_fn: Moments = self._moments
        self._unet_graphs: dict[tuple[object, ...], GraphedCFG] = {}
        self._vae_graphs: dict[tuple[object, ...], Moments] = {}
        # one CUDA-graph memory pool per kind, shared by every shape (graphs.py says why)
        self._graph_pools: dict[str, Any] = {}

    def set_channels_last(self, enabled: bool) -> None:
        """UNet and VAE weights in channels-last memory format (or back); drops captured graphs."""
        if enabled == self.channels_last:
            return
        fmt = torch.channels_last if enabled else torch.contiguous_format
        for module in (self.unet, self.vae):
            torch.nn.Module.to(module, memory_format=fmt)  # not ModelMixin.to (warns on casts)
        self.channels_last = enabled
        # compiled code bakes in the weights' strides (inductor asserts them at run time; seen
        # on the H200), so a layout change needs a fresh compile, as well as new graphs
        self._rebuild_callables()

    def set_compile(
        self,
        enabled: bool,
        backend: str = "jit",
        parts: tuple[str, ...] = COMPILE_PARTS,
        regions: bool = False,
    ) -> None:
        """Compile the UNet and the VAE encoder's moments with inductor, or go back to eager.

        `backend` "jit" is torch.compile; "aot" compiles the same graphs ahead of time
        (torch.compile's aot_compile) into packages kept under the warm-cache directory, which a
        later start loads without tracing (engine/guidance/aot.py).

        Why: with launches already graphed, the step is bound by kernel time, much of it
        memory-bound GroupNorm, SiLU, residual adds and layout copies around cuDNN's convolutions;
        inductor fuses those. Compilation itself happens lazily on the first call of each shape
        (in `Generator.warmup()` on an endpoint). `dynamic=False`: a preset fixes every shape,
        and a new shape gets its own static compile rather than a slower dynamic-shape kernel.
        `parts` compiles only some of "unet" and "vae", the rest eager: a compile helper
        process builds one part's artefacts (engine/service/compile_helpers.py). `regions` (aot
        only) compiles both models block by block (regions.py), and then a part "unet:K/N" (or
        "vae:K/N") compiles only the K-th of N shards of that model's blocks. Drops captured graphs.
        """
        if backend not in COMPILE_BACKENDS:
            raise ValueError(f"unknown compile backend {backend!r} (expected one of {COMPILE_BACKENDS})")
        parsed = sorted({parse_compile_part(p): p for p in parts}.items())
        models = [model for (model, _, _), _ in parsed]
        regions = regions and backend == "aot"
        if len(models) != len(set(models)) or (not regions and any(":" in p for _, p in parsed)):
            raise ValueError(
                f"compile parts {sorted(parts)}: one part a model, and shards only with aot regions"
            )
        parts = tuple(text for _, text in parsed)
        wanted = (enabled, backend, parts, regions)
        if wanted == (self.compiled, self.compile_backend, self.compile_parts, self.compile_regions):
            return
        self.compiled, self.compile_backend, self.compile_parts, self.compile_regions = wanted
        self._rebuild_callables()

    def _rebuild_callables(self) -> None:
        """What every path calls, for the current `compiled` and layout; drops captured graphs."""
        if self.compiled:
            compile_keys.install()  # cache keys that a forked endpoint shares with a plain one
        from engine.guidance.regions import Regional

        for previous in (self._unet_fn, self._moments_fn):
            if isinstance(previous, Regional):
                previous.restore()  # blocks packaged before: their own forward again
        parts = self.compile_parts
        use_aot = self.compiled and self.compile_backend == "aot"
        if use_aot:
            from engine.guidance import aot

            if not aot.supported():
                log.warning(
                    "torch %s cannot compile ahead of time (2.11+ can): torch.compile instead",
                    torch.__version__,
                )
                use_aot = False
        if use_aot:
            root = aot.package_dir()
            self._unet_fn, self._moments_fn = self.unet, self._moments
            for model, shard, shards in map(parse_compile_part, parts):
                call, name = (self.unet, "unet") if model == "unet" else (self._moments, "vae-encoder")
                fn: Any
                if self.compile_regions:  # its blocks; the VAE encoder's under the moments' own glue
                    blocks = self.unet if model == "unet" else cast(torch.nn.Module, self.vae.encoder)
                    fn = Regional(call, blocks, name, root, self.device, (shard, shards))
                else:
                    fn = aot.AotModule(call, name, root, self.device)
                if model == "unet":
                    self._unet_fn = fn
                else:
                    self._moments_fn = fn
        elif self.compiled:
            torch._dynamo.reset()  # no code compiled for other weights or layouts is reused
            self._unet_fn = torch.compile(self.unet, dynamic=False) if "unet" in parts else self.unet
            self._moments_fn = (
                torch.compile(self._moments, dynamic=False) if "vae" in parts else self._moments
            )
        else:
            self._unet_fn, self._moments_fn = self.unet, self._moments
        self.clear_graphs()

    def _aot_reports(self) -> list[Any]:
        """aot.BuildReport of every package set the UNet and VAE encoder called (none unless
        compile_backend is aot)."""
        return [r for fn in (self._unet_fn, self._moments_fn) for r in getattr(fn, "reports", [])]

    def aot_packages(self) -> list[str]:
        """The AOT package sets this guidance has run on (empty unless compile_backend is aot;
        a set refused because its loading killed two processes is not one)."""
        return sorted({r.package for r in self._aot_reports() if r.state != "crashed"})

    def aot_reports(self) -> list[dict[str, Any]] | None:
        """What each AOT package set cost at its first call (loaded, built, rebuilt and why);
        None unless compile_backend is aot."""
        if not (self.compiled and self.compile_backend == "aot"):
            return None
        return [dataclasses.asdict(r) | {"seconds": round(r.seconds, 2)} for r in self._aot_reports()]

    def fork(self) -> SDSGuidance:
        """The same weights (no copy) with per-run state of its own: ref_size, noise generator,
        text cache and CUDA graphs. Two forks can run on two threads at once, which a preset
        switch does while it warms up the new preset beside the serving one. The compiled
        callables are shared: dynamo keys compiled code by shape, so the new preset's shapes add
        entries beside the old ones (no `torch._dynamo.reset()`, which would drop the old ones).
        Changing the memory format on a fork would change the shared weights: the caller keeps
        `channels_last` equal (Generator.can_share)."""
        twin = copy.copy(self)
        twin.generator = torch.Generator(self.device)
        twin.reseed(0)
        twin._text_cache = OrderedDict()
        twin._unet_graphs = {}
        twin._vae_graphs = {}
        twin._graph_pools = {}  # a twin replays on another thread: its graphs get pools of their own
        return twin

    def clear_graphs(self) -> None:
        self._unet_graphs.clear()
        self._vae_graphs.clear()
        self._graph_pools = {}

    def _graph_pool(self, kind: str) -> Any:
        """The memory pool every CUDA graph of `kind` ("unet", "vae") captures into."""
        if kind not in self._graph_pools:
            self._graph_pools[kind] = torch.cuda.graph_pool_handle()
        return self._graph_pools[kind]

    def _graphs_on(self) -> bool:
        return self.cuda_graphs and self.device.type == "cuda"

    def camera_inputs(self, c2w: torch.Tensor) -> torch.Tensor | None:
        """The UNet's camera input (N,16) for OpenGL c2w (N,4,4) on the device; None without one.

        The pipeline computes these once per run for every step (one transfer), then passes each
        step's rows to `sds_loss(camera=...)`.
        """
        if self.camera_fn is None:
            return None
        return self.camera_fn(c2w.to(self.device)).to(self.dtype)

    @classmethod
    def for_spec(
        cls,
        spec: GuidanceSpec,
        components: Components,
        device: str | torch.device,
        frames: int,
        camera_fn: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> SDSGuidance:
        """The one place a spec's ref_size, dtype and seed reach the guidance."""
        return cls(
            **components,
            frames=frames,
            ref_size=int(spec.ref_size),
            device=device,
            dtype=torch_dtype(spec.dtype),
            camera_fn=camera_fn,
            seed=int(spec.seed),
        )

    def reseed(self, seed: int) -> None:
        """Restart the noise stream (posterior samples and SDS noise) from `seed`."""
        self.generator.manual_seed(int(seed))

    @torch.no_grad()
    def _encode_text(self, text: str) -> torch.Tensor:
        max_length = getattr(self.tokenizer, "model_max_length", 77)
        ids = self.tokenizer(
            [text], padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
        ).input_ids
        hidden = self.text_encoder(ids.to(self.device))[0]  # last_hidden_state (final LN applied)
        return hidden.to(self.dtype)

    def _cached_text(self, text: str) -> torch.Tensor:
        hidden = self._text_cache.get(text)
        if hidden is None:
            hidden = self._text_cache[text] = self._encode_text(text)
            while len(self._text_cache) > TEXT_CACHE_SIZE:
                self._text_cache.popitem(last=False)
        self._text_cache.move_to_end(text)
        return hidden

    def encode_prompt(self, prompt: str, negative: str = "") -> PromptEmbeds:
        return PromptEmbeds(cond=self._cached_text(prompt), uncond=self._cached_text(negative))

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [0,1] -> latents (B,4,ref/8,ref/8), differentiable."""
        mean, std = self.posterior(images)
        # the posterior sample as diffusers draws it: same generator, shape and dtype
        eps = torch.randn(mean.shape, generator=self.generator, device=mean.device, dtype=mean.dtype)
        return (mean + std * eps) * self.scaling_factor

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,3,H,W) in [0,1] -> the VAE posterior's (mean, std), differentiable; eager, graphed
        or compiled as configured. The batched path samples each job's rows with its own noise."""
        size = (self.ref_size, self.ref_size)
        if images.shape[-2:] != size:
            images = F.interpolate(images, size, mode="bilinear", align_corners=False)
        x = images.to(self.dtype) * 2.0 - 1.0
        encoder = self._moments_fn
        if self._graphs_on():
            key = (tuple(x.shape), x.dtype, self.channels_last)
            graphed = self._vae_graphs.get(key)
            if graphed is None:
                from engine.guidance.graphs import graph_vae_encoder

                graphed = graph_vae_encoder(self._moments_fn, x, pool=self._graph_pool("vae"))
                self._vae_graphs[key] = graphed
            encoder = graphed
        return encoder(x)

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, t_value: int) -> torch.Tensor:
        """DDIM forward noising at one timestep, with host-side scalar coefficients."""
        alpha = self._alphas_host[t_value]
        return latents * alpha**0.5 + noise * (1.0 - alpha) ** 0.5

    @torch.no_grad()
    def predict_noise(
        self,
        noisy: torch.Tensor,
        t: torch.Tensor,
        embeds: PromptEmbeds,
        c2w: torch.Tensor,
        guidance_scale: float,
        camera: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Classifier-free guided eps for (B,4,h,w) noisy latents at timestep t (B,).

        `camera`: the UNet's camera input for these views (from `camera_inputs`), else computed
        from `c2w`. With `cuda_graphs` on CUDA the UNet runs as a captured graph (output: a
        static buffer, valid until the next call).
        """
        if self.camera_fn is not None and camera is None:
            camera = self.camera_inputs(c2w)
        if self._graphs_on():
            cond, uncond = embeds.cond, embeds.uncond
            key = (
                tuple(noisy.shape),
                tuple(cond.shape),
                noisy.dtype,
                float(guidance_scale),
                self.channels_last,
            )
            graph = self._unet_graphs.get(key)
            if graph is None:
                from engine.guidance.graphs import GraphedCFG

                graph = GraphedCFG(
                    self._unet_fn,
                    noisy,
                    t,
                    cond,
                    uncond,
                    camera,
                    guidance_scale,
                    pool=self._graph_pool("unet"),
                )
                self._unet_graphs[key] = graph
            return graph(noisy, t, cond, uncond, camera)
        return guided_eps(self._unet_fn, noisy, t, embeds.cond, embeds.uncond, camera, guidance_scale)

    def sds_loss(
        self,
        images: torch.Tensor,
        c2w: torch.Tensor,
        embeds: PromptEmbeds,
        step: int,
        total_steps: int,
        guidance_scale: float,
        camera: torch.Tensor | None = None,
        timer: StageTimer | None = None,
    ) -> torch.Tensor:
        """Scalar loss whose gradient wrt `images` is the SDS gradient (w(t) = 1).

        Issues no host synchronisation (no H2D copies, no `.item()`), so the CPU can run ahead;
        a `timer` (the pipeline's stage-timing hook) may sync around the VAE encode and the UNet.
        """
        batch = images.shape[0]
        if batch % self.frames:
            raise ValueError(f"SDS: batch {batch} is not a multiple of {self.frames} views")
        stage = timer or _untimed
        with stage("vae_encode"):
            latents = self.encode_images(images)
        t_value = annealed_timestep(step, total_steps, len(self.alphas_cumprod))
        t = torch.full((batch,), t_value, device=self.device, dtype=torch.long)
        with torch.no_grad():
            noise = torch.randn(
                latents.shape, generator=self.generator, device=self.device, dtype=latents.dtype
            )
            noisy = self.add_noise(latents.detach(), noise, t_value)
            with stage("unet"):
                eps_hat = self.predict_noise(noisy, t, embeds, c2w, guidance_scale, camera=camera)
            grad = torch.nan_to_num(eps_hat.float() - noise.float())
            target = latents.detach().float() - grad
        return 0.5 * F.mse_loss(latents.float(), target, reduction="sum") / batch
