"""Scorers: the gate-only stand-in on real files, and the validation-service client."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from console.mining.scorers import GateOnlyScorer, ValidationServiceScorer, pick_scorer
from engine.formats import spz


@pytest.fixture(scope="module")
def hamburger_spz(vectors_dir: Path) -> bytes:
    return (vectors_dir / "hamburger.spz").read_bytes()  # 52,709 splats: passes the gate


async def test_gate_only_passes_a_real_result_without_inventing_a_score(hamburger_spz: bytes) -> None:
    r = await GateOnlyScorer().score("a hamburger", hamburger_spz)
    assert r.gate_only and r.gate_passed
    assert r.score is None
    assert r.rule_score(0.6) == 0.6  # acceptance assumed for the cooldown rules, nothing more


async def test_gate_only_fails_a_small_result_with_zero(vectors_dir: Path) -> None:
    small = spz.compress((vectors_dir / "synth_sh3.ply").read_bytes())  # 1000 splats
    r = await GateOnlyScorer().score("x", small)
    assert r.gate_passed is False and r.score == 0.0
    assert "too few" in r.detail
    assert r.rule_score(0.6) == 0.0


async def test_gate_only_on_garbage_is_a_zero() -> None:
    r = await GateOnlyScorer().score("x", b"not an spz")
    assert r.gate_passed is False and r.score == 0.0


async def test_validation_service_client_posts_spz_and_reads_score(hamburger_spz: bytes) -> None:
    seen: dict = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(json.loads(request.content))
        seen["path"] = request.url.path
        return httpx.Response(200, json={"score": 0.72, "gate": {"passed": True, "reason": "ok"}})

    scorer = ValidationServiceScorer("http://validator.test")
    scorer._client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    r = await scorer.score("a hamburger", hamburger_spz)
    await scorer.aclose()
    assert seen["path"] == "/validate_txt_to_3d_ply/"
    assert seen["compression"] == 2 and base64.b64decode(seen["data"]) == hamburger_spz
    assert seen["prompt"] == "a hamburger"
    assert (r.score, r.gate_passed, r.gate_only) == (0.72, True, False)
    assert r.parts is None  # the service named no parts: none invented


async def test_validation_service_score_parts_are_kept_as_answered(hamburger_spz: bytes) -> None:
    answer = {"score": 0.7, "iqa": 0.81, "alignment_score": 0.66, "ssim": 0.9, "lpips": None, "views": 16}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answer)

    scorer = ValidationServiceScorer("http://validator.test")
    scorer._client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    r = await scorer.score("a hamburger", hamburger_spz)
    await scorer.aclose()
    assert r.parts == {"iqa": 0.81, "alignment_score": 0.66, "ssim": 0.9}  # lpips null: left out


async def test_validation_service_down_counts_as_validation_failure() -> None:
    scorer = ValidationServiceScorer("http://127.0.0.1:9")  # nothing listens on the discard port
    r = await scorer.score("x", b"abc")
    await scorer.aclose()
    assert r.failed and r.rule_score(0.6) is None


async def test_pick_scorer_falls_back_to_gate_only() -> None:
    s = await pick_scorer("http://127.0.0.1:9")
    assert isinstance(s, GateOnlyScorer)
    assert "gate-only" in s.label
