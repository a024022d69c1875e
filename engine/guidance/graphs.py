"""CUDA graphs for the guidance hot path: captured once per shape, replayed every SDS step.

Why: at SDS batch sizes the UNet and the VAE encoder are bound by kernel-launch overhead, not
arithmetic (performance-anchors.md: an SD 2.1-size UNet forward at batch 8 on 32x32 latents takes
~47 ms eager and ~9 ms replayed as a graph). A preset fixes every shape (views per step,
`ref_size`, prompt length), so one capture serves every step of every generation.

A replay writes into static output buffers: consume (or copy) an output before the next replay.
Parameters must stay where they were at capture (no `.to()`, no memory-format change): the
owner drops its graphs when it changes them.

Graphs of one kind share one memory pool (the owner passes it): a step replays one UNet graph
and one VAE encoder graph, of one shape, so the shapes' intermediates never live at the same
time, and the pool holds the largest shape's rather than the sum over every batch bucket (each
graph's static outputs stay allocated, so a later capture cannot take them). The UNet and the VAE
keep separate pools: the UNet replays between the encoder's forward and backward, which reads
what the forward saved.

Captures use `capture_error_mode="thread_local"`: a preset switch captures the new preset's
graphs on the endpoint's build thread while the generation thread keeps running the old preset
(its host syncs and allocations would invalidate a "global"-mode capture, or fail themselves).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor

from engine.guidance.cfg import guided_eps

CAPTURE_MODE = "thread_local"  # see the module docstring


def _side_stream_warmup(fn: Callable[[], Any], iterations: int) -> None:
    # cuDNN/cuBLAS pick algorithms and allocate workspaces on first use; that must happen
    # outside the capture, on a side stream, as the CUDA-graphs docs require.
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(iterations):
            fn()
    torch.cuda.current_stream().wait_stream(stream)


class GraphedCFG:
    """Classifier-free-guided eps: the UNet on [cond, uncond] plus the CFG mix, one graph.

    Static inputs: noisy latents (B,4,h,w), timesteps (B,), cond/uncond embeddings (1,L,D) and
    the camera input (B,16) or None. `guidance_scale` is baked in (a Python scalar in the
    kernels, exactly as the eager path computes it), so it is part of the owner's cache key.
    """

    def __init__(
        self,
        unet: Callable[..., Any],
        noisy: Tensor,
        timesteps: Tensor,
        cond: Tensor,
        uncond: Tensor,
        camera: Tensor | None,
        guidance_scale: float,
        warmup: int = 2,
        pool: Any = None,
    ) -> None:
        self._unet = unet  # the module or its compiled form
        self.guidance_scale = float(guidance_scale)
        self._noisy = noisy.detach().clone()
        self._t = timesteps.detach().clone()
        self._cond = cond.detach().clone()
        self._uncond = uncond.detach().clone()
        self._camera = camera.detach().clone() if camera is not None else None
        with torch.no_grad():
            _side_stream_warmup(self._forward, warmup)
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph, pool=pool, capture_error_mode=CAPTURE_MODE):
                self._output = self._forward()

    def _forward(self) -> Tensor:
        return guided_eps(
            self._unet, self._noisy, self._t, self._cond, self._uncond, self._camera, self.guidance_scale
        )

    def __call__(
        self, noisy: Tensor, timesteps: Tensor, cond: Tensor, uncond: Tensor, camera: Tensor | None
    ) -> Tensor:
        self._noisy.copy_(noisy)
        self._t.copy_(timesteps)
        self._cond.copy_(cond)
        self._uncond.copy_(uncond)
        if self._camera is not None and camera is not None:
            self._camera.copy_(camera)
        self._graph.replay()
        return self._output


def graph_vae_encoder(
    moments: Callable[[Tensor], tuple[Tensor, Tensor]], example: Tensor, warmup: int = 3, pool: Any = None
) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """The VAE encoder's `moments` (images -> posterior mean, std) forward *and* backward captured
    as CUDA graphs, as torch.cuda.make_graphed_callables does for one callable.

    Written out rather than calling make_graphed_callables because its `capture_error_mode`
    argument (needed for thread-local capture, see the module docstring) is missing from the
    torch releases many boxes run (2.11 has it on torch.cuda.graph only).

    The returned callable maps images (B,3,h,w) in [-1, 1] (the example's shape and dtype) to
    (mean, std); gradients flow back to the images through the captured backward graph. Both
    outputs and the input gradient are static buffers: consume them before the next call. Sampling
    stays outside the graph: it draws from the guidance's noise generator, whose stream must match
    the eager path. `moments` may be a compiled module.
    """
    static_in = example.detach().clone().requires_grad_(True)

    def fwd_bwd() -> None:
        outs = moments(static_in)
        torch.autograd.grad(outs, (static_in,), grad_outputs=tuple(torch.ones_like(o) for o in outs))

    _side_stream_warmup(fwd_bwd, warmup)
    if pool is None:
        pool = torch.cuda.graph_pool_handle()  # one pool: the backward reads what the forward saved
    fwd_graph, bwd_graph = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
    with torch.cuda.graph(fwd_graph, pool=pool, capture_error_mode=CAPTURE_MODE):
        static_mean, static_std = moments(static_in)
    static_grad_mean, static_grad_std = torch.empty_like(static_mean), torch.empty_like(static_std)
    with torch.cuda.graph(bwd_graph, pool=pool, capture_error_mode=CAPTURE_MODE):
        (static_grad_in,) = torch.autograd.grad(
            (static_mean, static_std), (static_in,), grad_outputs=(static_grad_mean, static_grad_std)
        )

    class _Graphed(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, images: Tensor) -> tuple[Tensor, Tensor]:
            static_in.detach().copy_(images)
            fwd_graph.replay()
            return static_mean.detach(), static_std.detach()

        @staticmethod
        def backward(ctx: Any, grad_mean: Tensor, grad_std: Tensor) -> Tensor:
            static_grad_mean.copy_(grad_mean)
            static_grad_std.copy_(grad_std)
            bwd_graph.replay()
            return static_grad_in.detach()

    def graphed(images: Tensor) -> tuple[Tensor, Tensor]:
        return cast(tuple[Tensor, Tensor], _Graphed.apply(images))

    return graphed


__all__ = ["GraphedCFG", "graph_vae_encoder"]
