"""Classifier-free guidance: the one definition of the guided noise prediction.

Its own module because both the eager SDS path (sds.py) and the captured CUDA graph
(graphs.GraphedCFG) call it, and sds.py builds graphs: neither may import the other for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["guided_eps"]


def guided_eps(
    unet: Callable[..., Any],
    noisy: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    camera: torch.Tensor | None,
    guidance_scale: float,
) -> torch.Tensor:
    """The UNet on [cond, uncond] in one batch, then the CFG mix
    eps_uncond + scale * (eps_cond - eps_uncond)."""
    batch = noisy.shape[0]
    context = torch.cat([cond.expand(batch, -1, -1), uncond.expand(batch, -1, -1)])
    kwargs: dict[str, torch.Tensor] = {}
    if camera is not None:
        kwargs["class_labels"] = torch.cat([camera, camera])
    eps = unet(torch.cat([noisy, noisy]), torch.cat([t, t]), encoder_hidden_states=context, **kwargs).sample
    eps_cond, eps_uncond = eps.chunk(2)
    result: torch.Tensor = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
    return result
