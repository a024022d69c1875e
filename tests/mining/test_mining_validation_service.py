"""The rehearsal's scorer against a real `gen404 validator` subprocess (tiny random CLIP, 32 px)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from console.mining.scorers import ValidationServiceScorer, pick_scorer
from engine.formats import spz

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def validator_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("validator") / "service.log"
    cmd = [sys.executable, "-m", "engine.cli", "validator", "--port", str(port), "--size", "32"]
    cmd += ["--model", "gen404-tiny", "--random-weights", "--device", "cpu", "--log-level", "warning"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"validator exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(url + "/version/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"validator did not start: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
