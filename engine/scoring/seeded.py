"""Seeded random weights that do not depend on a library's own initialisers.

`--random-weights` must build the same numbers on every machine and in the scratch run that
produced the fidelity test's expected values (which loads our weights into the subnet's classes),
so the values come from one torch.Generator walked over the parameters in registration order, not
from open_clip's / transformers' / torchvision's init code (which changes between versions).
"""

from __future__ import annotations

import math

import torch
from torch import nn

NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)


@torch.no_grad()
def seeded_init(model: nn.Module, seed: int) -> nn.Module:
    """Fill every parameter of `model` in place: weights N(0, 1/fan_in) (activations keep their
    scale, so outputs still depend on the input), biases 0, norm gains 1, layer scales 1, other
    vectors N(0, 0.02). Returns the model."""
    gen = torch.Generator().manual_seed(seed)
    for _, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if isinstance(module, NORMS):
                param.fill_(1.0 if name == "weight" else 0.0)
            elif name == "bias":
                param.zero_()
            elif name.startswith("lambda"):  # DINOv2 layer scale
                param.fill_(1.0)
            elif param.ndim >= 2:
                fan_in = math.prod(param.shape[1:])
                param.copy_(torch.randn(param.shape, generator=gen) / math.sqrt(fan_in))
            else:
                param.copy_(0.02 * torch.randn(param.shape, generator=gen))
    return model
