"""Console test helpers for any test folder (console, mining, reliability)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from console.app import Gen404Console
from console.config import ConsoleConfig
from console.gpu import NvmlSampler
from console.mining.options import MiningOptions
from tests.support.fakes import FakeNvml


def quiet_config(**kw: Any) -> ConsoleConfig:
    """ConsoleConfig without the mining rehearsal (it would send generations to the test's endpoints)."""
    return ConsoleConfig(mining=MiningOptions(rehearsal=False), **kw)


def offline_console(
    config: ConsoleConfig, sampler: NvmlSampler, tmp_path: Path, gpus: int = 0
) -> Gen404Console:
    """A console that supervises nothing, sees `gpus` GPUs, finds no weights and keeps its state
    file in `tmp_path`: for tests of its panes against live data."""
    return Gen404Console(
        config,
        sampler=sampler,
        gpu_count=lambda: (gpus, None),
        have_weights=lambda: False,
        state_file=tmp_path / "state.json",
        supervise=False,
    )


def supervising_console(config: ConsoleConfig) -> Gen404Console:
    """A console that supervises (or attaches to) the endpoints in `config` for real, on a box it
    sees with no GPU (a fake NVML with one GPU for the pane) and no weights."""
    return Gen404Console(
        config, sampler=NvmlSampler(FakeNvml()), gpu_count=lambda: (0, None), have_weights=lambda: False
    )
