"""GroupNorm that keeps its input's memory layout when compiled (the VAE encoder's backward).

Why: ATen's GroupNorm returns contiguous NCHW tensors, and torch.compile traces those strides.
In the VAE encoder's compiled backward this made cuDNN's convolution_backward copy its
channels-last inputs and gradients back and forth: 30 copy kernels a step, most of the 2.6 ms that
ATen elementwise kernels took of the 10.7 ms fwd+bwd at text_mv's 4 x 256 px (H200,
benchmarks/probes/vae_backward.py; docs/benchmarks.md, third round). Written as
plain elementwise ops and per-channel reductions, the normalisation follows the input's strides,
so channels-last stays channels-last through the forward and the backward.

Eager calls keep ATen's kernel (one launch, bit-identical to before); only traced code takes the
plain-op form, which inductor fuses. Statistics are fp32, as ATen computes them for bf16/fp16.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class LayoutGroupNorm(nn.GroupNorm):
    """nn.GroupNorm with the same parameters and maths; layout-preserving under torch.compile."""

    def forward(self, x: Tensor) -> Tensor:
        if not torch.compiler.is_compiling():
            return super().forward(x)
        # Statistics as per-channel sums over the spatial dims, then per group: every reduction
        # (forward and autograd's backward) runs along H*W for each channel, which suits a
        # channels-last layout. Two passes (mean, then centred squares), as stable as ATen's.
        n, c = x.shape[:2]
        spatial = tuple(range(2, x.dim()))
        per_channel = (n, c) + (1,) * len(spatial)
        channels_per_group = c // self.num_groups
        count = channels_per_group * math.prod(x.shape[2:])  # elements in one group of one sample
        xf = x.float()

        def group_mean(channel_sums: Tensor) -> Tensor:
            groups = channel_sums.unflatten(1, (self.num_groups, -1)).sum(-1, keepdim=True) / count
            return groups.expand(-1, -1, channels_per_group).reshape(per_channel)

        centred = xf - group_mean(xf.sum(spatial))
        y = centred * torch.rsqrt(group_mean(centred.square().sum(spatial)) + self.eps)
        if self.affine:
            shape = (-1,) + (1,) * len(spatial)
            y = y * self.weight.float().view(shape) + self.bias.float().view(shape)
        return y.to(x.dtype)


def use_layout_group_norm(module: nn.Module, enabled: bool = True) -> int:
    """Switch every nn.GroupNorm in `module` to LayoutGroupNorm (or back); returns how many.

    The class is swapped in place: parameters, state-dict keys and hooks stay as they are.
    """
    count = 0
    for sub in module.modules():
        if isinstance(sub, nn.GroupNorm):
            sub.__class__ = LayoutGroupNorm if enabled else nn.GroupNorm
            count += 1
    return count


__all__ = ["LayoutGroupNorm", "use_layout_group_norm"]
