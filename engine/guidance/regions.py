"""The UNet and the VAE encoder compiled ahead of time region by region: one AOT package per
top-level block (`compile_regions`).

Why: a cold compile of a whole model is one graph of mostly single-threaded Python in one
compile helper (H200, text_mv_fast, session 11: the UNet's helper finished 77.6-85.5 s after its
spawn, the VAE encoder's, forward and backward, 59.4-67.2 s), and it bounded a first start (ready
at 89-97 s). Their top-level blocks (down_blocks.i, mid_block, up_blocks.i) compile
independently, so compile helpers can split them into shards, one process each (`gen404 models
warm --part unet:K/N` or `vae:K/N`), and a later start loads every block's package.

At run time a model's own forward runs as written (the UNet's time embedding, conv_in and
conv_out stay eager) and calls each block, whose `forward` is its package: under CUDA graphs the
whole call is replayed, so the glue between blocks costs no launches. A block's backward (the VAE
encoder's image gradient) is compiled with it. Blocks are assigned to shards by size (largest
first, each to the lightest shard), the same in every process for the same architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from engine.guidance.aot import AotModule, BuildReport

BLOCKS = ("down_blocks", "mid_block", "up_blocks")  # in call order


def regions(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """A UNet's or a VAE encoder's top-level blocks by dotted name, in call order."""
    found: list[tuple[str, torch.nn.Module]] = []
    for name in BLOCKS:
        child = getattr(model, name, None)
        if isinstance(child, torch.nn.ModuleList):
            found += [(f"{name}.{i}", block) for i, block in enumerate(child)]
        elif isinstance(child, torch.nn.Module):
            found.append((name, child))
    return found


def shard_owners(sizes: list[int], shards: int) -> list[int]:
    """Each region's shard: largest first, each to the shard with the least so far (ties: the
    lower index). `sizes` stand for compile work: the blocks' module counts."""
    load = [0] * shards
    owners = [0] * len(sizes)
    for index in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        owner = min(range(shards), key=lambda s: (load[s], s))
        owners[index] = owner
        load[owner] += sizes[index]
    return owners


def blocks_by_shard(model: torch.nn.Module, shards: int) -> list[tuple[str, torch.nn.Module, int]]:
    """Each of `model`'s blocks with its shard; a block's size is its module count."""
    found = regions(model)
    owners = shard_owners([sum(1 for _ in block.modules()) for _, block in found], shards)
    return [(name, block, owner) for (name, block), owner in zip(found, owners, strict=True)]


class _Unbound:
    """What a packaged forward becomes in a package's saved guard state: never called there."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a block's packaged forward, restored from a saved guard state")


class PackagedForward:
    """A block's `forward` as its package. torch pickles a module's callables into a package's
    guard state: this one pickles as `_Unbound`, not as its package (threads' locks, compiled
    code)."""

    def __init__(self, package: AotModule) -> None:
        self.package = package

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.package(*args, **kwargs)

    def __reduce__(self) -> tuple[type[_Unbound], tuple[()]]:
        return _Unbound, ()


class Regional:
    """`call` (a model's own call: the UNet, or the VAE encoder's moments) with the blocks of
    `model` in one shard (all by default) called through AOT packages named `name.<block>`, the
    others eager. Calls keep `call`'s signature and output. `restore()` undoes it."""

    def __init__(
        self,
        call: Callable[..., Any],
        model: torch.nn.Module,
        name: str,
        root: Path,
        device: torch.device,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self.call = call
        index, count = shard
        found = blocks_by_shard(model, count)
        if not found:
            raise ValueError(f"{type(model).__name__} has none of the blocks {BLOCKS}: nothing to compile")
        self.compiled: list[tuple[torch.nn.Module, AotModule]] = []
        for block_name, block, owner in found:
            if owner != index:
                continue
            package = AotModule(block, f"{name}.{block_name}", root, device)
            # an instance attribute: nn.Module.__call__ calls it; the package itself calls the
            # class's forward (aot._call), so there is no loop
            block.forward = PackagedForward(package)
            self.compiled.append((block, package))

    @property
    def reports(self) -> list[BuildReport]:
        return [report for _, package in self.compiled for report in package.reports]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.call(*args, **kwargs)

    def restore(self) -> None:
        """The blocks' own forward again (compile off, another backend, another layout)."""
        for block, _ in self.compiled:
            block.__dict__.pop("forward", None)
        self.compiled = []


__all__ = ["BLOCKS", "PackagedForward", "Regional", "blocks_by_shard", "regions", "shard_owners"]
