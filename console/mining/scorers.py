"""Pluggable scorers for the rehearsal: the local validation service when it answers, else a
clearly labelled gate-only stand-in.

The stand-in never invents quality. It decompresses the SPZ as a validator does and applies the
validity gate (engine.gate): a result that fails the gate would score 0 on any validator, so it
is reported as 0.0 and the rules treat it as a low score (600 s penalty). A result that passes
has an unknown quality: its `score` is None and it is marked gate-only. For the cooldown rules
it is fed `rule_score` = the acceptance threshold, i.e. the optimistic assumption "accepted",
which gives the plain cooldown; the ledger stores no score for it, so mean scores and the
seed guide's score x generations projection say "gate-only" instead of a number.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from typing import Protocol

import httpx

from engine.formats import ply, spz
from engine.gate import check_gate

VALIDATE_PATH = "/validate_txt_to_3d_ply/"
VERSION_PATH = "/version/"
DEFAULT_VALIDATOR_URL = "http://127.0.0.1:8094"
COMPRESSION_SPZ = 2
SCORE_PARTS = ("iqa", "alignment_score", "ssim", "lpips")  # the validation service's answer fields


@dataclass(frozen=True)
class ScoreResult:
    score: float | None  # the quality score; None when unknown (gate-only pass, or scoring failed)
    gate_passed: bool | None
    gate_only: bool
    detail: str = ""
    failed: bool = False  # the scorer could not score (the validator's "validation failed")
    parts: dict[str, float] | None = None  # the service's iqa, alignment_score, ssim, lpips (as answered)

    def rule_score(self, threshold: float) -> float | None:
        """The number fed to the validator rules (None = validation failed: plain cooldown)."""
        if self.failed:
            return None
        if self.score is not None:
            return self.score
        return threshold if self.gate_passed else 0.0


class Scorer(Protocol):
    label: str

    async def score(self, prompt: str, spz_bytes: bytes) -> ScoreResult: ...

    async def aclose(self) -> None: ...


def gate_check_spz(spz_bytes: bytes) -> tuple[bool, str]:
    """Decompress as the validator does (no normals), read the PLY, apply the validity gate."""
    try:
        splats = ply.read_ply(spz.decompress(spz_bytes, include_normals=False))
    except (spz.SpzError, ply.PlyError, ValueError) as exc:
        return False, f"undecodable result: {exc}"
    verdict = check_gate(splats)
    return verdict.passed, verdict.reason


class GateOnlyScorer:
    label = "gate-only stand-in (no quality score: acceptance assumed when the validity gate passes)"

    async def score(self, prompt: str, spz_bytes: bytes) -> ScoreResult:
        passed, reason = await asyncio.to_thread(gate_check_spz, spz_bytes)
        return ScoreResult(None if passed else 0.0, passed, gate_only=True, detail=reason)

    async def aclose(self) -> None:
        return None


class ValidationServiceScorer:
    """`gen404 validator` (or the subnet's own validation server): POST the SPZ, read `score`."""

    def __init__(self, url: str = DEFAULT_VALIDATOR_URL, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.label = f"validation service at {self.url}"
        self._client = httpx.AsyncClient(timeout=timeout, trust_env=False)

    async def score(self, prompt: str, spz_bytes: bytes) -> ScoreResult:
        body = {
            "prompt": prompt,
            "data": base64.b64encode(spz_bytes).decode("ascii"),
            "compression": COMPRESSION_SPZ,
        }
        try:
            r = await self._client.post(self.url + VALIDATE_PATH, json=body)
            data = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            return ScoreResult(None, None, gate_only=False, detail=f"validation failed: {exc}", failed=True)
        score = data.get("score")
        if not isinstance(score, (int, float)):
            return ScoreResult(None, None, False, detail=f"no score in answer ({r.status_code})", failed=True)
        gate = data.get("gate")
        gate_passed = gate.get("passed") if isinstance(gate, dict) else None
        detail = str(data.get("error") or "")
        parts = {
            k: float(data[k])
            for k in SCORE_PARTS
            if isinstance(data.get(k), (int, float)) and not isinstance(data.get(k), bool)
        }
        return ScoreResult(float(score), gate_passed, gate_only=False, detail=detail, parts=parts or None)

    async def aclose(self) -> None:
        await self._client.aclose()


async def service_reachable(url: str, timeout: float = 1.5) -> bool:
    try:
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
            r = await client.get(url.rstrip("/") + VERSION_PATH)
            return r.status_code == 200
    except httpx.HTTPError:
        return False


async def pick_scorer(url: str | None = DEFAULT_VALIDATOR_URL) -> Scorer:
    """The validation service when it answers GET /version/, else the gate-only stand-in."""
    if url and await service_reachable(url):
        return ValidationServiceScorer(url)
    return GateOnlyScorer()
