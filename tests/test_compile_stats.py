"""engine/compile_stats.py: a build's compile figures say whether inductor's caches were hit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine import compile_stats


def _compile_once() -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x) * 3 - x.sin()

    compiled = torch.compile(f, dynamic=False)
    x = torch.arange(41, dtype=torch.float32)
    assert torch.allclose(compiled(x), f(x))


def test_a_cold_compile_misses_and_the_same_compile_again_hits(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    before = compile_stats.snapshot()
    _compile_once()
    cold = compile_stats.since(before)
    assert cold is not None
    assert cold["frames"] >= 1 and cold["graphs"] >= 1
    assert cold["fx_graph_misses"] >= 1 and cold["fx_graph_hits"] == 0
    assert cold["total_s"] > 0

    torch._dynamo.reset()  # dynamo forgets the code; inductor's disk cache keeps the graph
    before = compile_stats.snapshot()
    _compile_once()
    warm = compile_stats.since(before)
    assert warm is not None
    assert warm["fx_graph_hits"] >= 1 and warm["fx_graph_misses"] == 0
    assert "1 hit / 0 missed" in compile_stats.describe(warm)


def test_the_backward_compiled_at_the_first_backward_is_timed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # AOTAutograd compiles a backward graph lazily, outside dynamo's compile_inner timer: a
    # build's report must still count it (a VAE encoder's backward is most of a cold start's rest)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: (torch.tanh(x) * x.sin()).sum(), dynamic=False)
    x = torch.linspace(-2, 2, 37, requires_grad=True)
    loss = compiled(x)
    after_forward = compile_stats.snapshot()
    loss.backward()
    stats = compile_stats.since(after_forward)
    assert stats is not None and stats["backward_compile_s"] > 0
    assert stats["tracing_s"] == 0  # nothing traced: only the backward was compiled
    assert torch.allclose(x.grad, torch.tanh(x) * x.cos() + (1 - torch.tanh(x) ** 2) * x.sin())
    assert "backward compile" in compile_stats.describe(stats)


def test_nothing_compiled_between_snapshots_is_none() -> None:
    before = compile_stats.snapshot()
    torch.ones(3).add_(1)  # eager work is not a compile
    assert compile_stats.since(before) is None
    assert compile_stats.describe(None) == "nothing compiled"


def test_a_dynamo_reset_in_between_does_not_make_figures_negative() -> None:
    compiled = torch.compile(lambda x: x.cos() * 2, backend="eager")
    compiled(torch.ones(4))  # something counted and timed before the snapshot
    before = compile_stats.snapshot()
    assert before.counts["frames"] >= 1 and sum(before.timings["bytecode_tracing"][0]) > 0
    torch._dynamo.reset()  # as SDSGuidance.set_compile does: counters and timings start again
    again = torch.compile(lambda x: x.cos() * 3, backend="eager")
    again(torch.ones(4))
    stats = compile_stats.since(before)
    assert stats is not None
    assert stats["frames"] >= 1 and stats["graphs"] >= 1
    assert all(value >= 0 for value in stats.values())  # before: the earlier timings were subtracted
