"""The rehearsal's scorer against a real `gen404 validator` subprocess (tiny random CLIP, 32 px)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from console.mining.scorers import ValidationServiceScorer, pick_scorer
from engine.formats import spz
from tests.support.server import running_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def validator_url() -> Iterator[str]:
    args = ["validator", "--size", "32", "--model", "gen404-tiny", "--random-weights", "--device", "cpu"]
    with running_server([*args, "--log-level", "warning"], ready=None, probe="/version/") as server:
        yield server.base_url


async def test_picks_the_service_and_reads_real_scores(validator_url: str, vectors_dir: Path) -> None:
    scorer = await pick_scorer(validator_url)
    assert isinstance(scorer, ValidationServiceScorer)
    try:
        good = await scorer.score("a hamburger", (vectors_dir / "hamburger.spz").read_bytes())
        small = await scorer.score("x", spz.compress((vectors_dir / "synth_sh3.ply").read_bytes()))
    finally:
        await scorer.aclose()
    assert not good.gate_only and good.gate_passed is True
    assert isinstance(good.score, float) and 0.0 <= good.score <= 1.0
    assert good.rule_score(0.6) == good.score  # a measured score goes to the rules as it is
    assert small.gate_passed is False and small.score == 0.0
