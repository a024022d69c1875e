"""Local validation service (`gen404 validator`): the subnet's validation API on our scorer.

API as the subnet's validation server (404-Repo/three-gen-subnet, validation/server/app.py,
validation/engine/data_structures.py): `POST /validate_txt_to_3d_ply/` with JSON
`{prompt, data (base64), compression (0 PLY, 2 SPZ)}` answering `{score, iqa, alignment_score,
ssim, lpips}` (validation/engine/data_structures.py ValidationResponse: alignment_score is the CLIP
geometric mean / 0.35, not capped), and `GET /version/`. `score` is the validator's final formula
(engine.scoring.formula). We add `accepted` and `reason` (the 0.6 threshold), `gate`, `views` and
`kept` (CLIP per view), `iqa_views`, `ssim_pairs`, `lpips_pairs`, `splats` and `timings`. A result
failing the gate answers score 0 with the parts null (the validator renders nothing for it).

Every failure answers `{"score": 0.0, "error": ...}`: 400 for input we cannot score (prompt,
base64, compression code, undecodable data), 413 past the body limit, 422 for a malformed JSON
body, 500 for anything else. Nothing heavy runs on the event loop: JSON parsing and base64
decoding run on a small thread pool, scoring on one worker thread (requests queue, as with the
subnet's single-worker executor). Preview images (generate_*_preview) are not produced.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from engine.prompts import validate_prompt
from engine.scoring.scorer import COMPRESSION_PLY, COMPRESSION_SPZ, ResultDecodeError, Scorer, ScoreReport
from engine.scoring.transform import FramingError
from engine.service import package_version
from engine.service.security import ASGIApp, Message, Receive, RequestGuard, Scope, Send

VALIDATE_PATH = "/validate_txt_to_3d_ply/"
DEFAULT_PORT = 8094
DEFAULT_BODY_LIMIT = 64 * 1024 * 1024


GEN404_VERSION = package_version()
SERVICE_VERSION = f"gen404-validator {GEN404_VERSION}"

log = logging.getLogger("gen404.validator")


class ValidationRequest(BaseModel):  # parsed by hand off the loop, see parse_request
    prompt: str | None = Field(default=None, description="the text prompt of the task")
    data: str = Field(description="the result, base64: PLY bytes or 404 SPZ bytes")
    compression: int = Field(default=COMPRESSION_PLY, description="0 = PLY, 2 = SPZ")


@dataclass
class RequestRefused(Exception):
    """A request we cannot score, with the status and error it is answered with."""

    status: int
    error: str
    detail: Any = None


@dataclass(frozen=True)
class ParsedRequest:
    prompt: str
    compression: int
    data: bytes
    parse_s: float


OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": ValidationRequest.model_json_schema()}},
    }
}


def failure(status: int, message: str, detail: Any = None) -> JSONResponse:
    return JSONResponse({"score": 0.0, "error": message, "detail": detail}, status_code=status)


def json_safe(value: Any) -> Any:
    """nan / inf -> None, recursively: JSON has no such numbers (a negative SSIM pair makes the
    geometric mean nan, as in the subnet); the answer must still be valid JSON, not a 500."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def report_response(report: ScoreReport, extra_timings: dict[str, float]) -> dict[str, Any]:
    return json_safe(
        {
            "score": report.score,
            "iqa": report.iqa,
            "alignment_score": report.alignment_raw,
            "ssim": report.ssim,
            "lpips": report.lpips,
            "accepted": report.accepted,
            "reason": report.reason,
            "gate": {"passed": report.gate_passed, "reason": report.gate_reason},
            "views": report.cosines,
            "kept": report.kept,
            "iqa_views": report.iqa_views,
            "ssim_pairs": report.ssim_pairs,
            "lpips_pairs": report.lpips_pairs,
            "splats": report.splats,
            "timings": {**report.timings, **extra_timings},
            "model": report.model,
            "quality_model": report.quality_model,
            "size": report.size,
            "device": report.device,
        }
    )


def parse_request(raw: bytes) -> ParsedRequest:
    """JSON body -> checked request with the result bytes; RequestRefused says what is wrong.
    Runs on a worker thread: parsing and base64-decoding tens of MiB would stall the loop."""
    t0 = time.perf_counter()
    try:
        request = ValidationRequest.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        raise RequestRefused(422, "invalid request body", errors) from None
    try:
        prompt = validate_prompt(request.prompt if request.prompt is not None else "")
    except ValueError as exc:
        raise RequestRefused(400, "bad prompt", str(exc)) from None
    if request.compression not in (COMPRESSION_PLY, COMPRESSION_SPZ):
        raise RequestRefused(400, "unsupported compression", f"{request.compression}: use 0 (PLY) or 2 (SPZ)")
    try:
        data = base64.b64decode(request.data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestRefused(400, "data is not valid base64", str(exc)) from None
    if not data:
        raise RequestRefused(400, "data is empty")
    return ParsedRequest(prompt, request.compression, data, time.perf_counter() - t0)


def create_app(scorer: Scorer, body_limit: int = DEFAULT_BODY_LIMIT, api_key: str | None = None) -> ASGIApp:
    """The ASGI app: FastAPI behind the shared request guard (API key, body limit)."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gen404-validate")  # one model
    parser = ThreadPoolExecutor(max_workers=2, thread_name_prefix="gen404-parse")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(executor, scorer.load)  # models load once, before serving
        log.info("scorer ready: %s on %s/%s", scorer.clip.model_name, scorer.device, scorer.backend)
        yield
        executor.shutdown(wait=False, cancel_futures=True)
        parser.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="gen404 local validation service", version=GEN404_VERSION, lifespan=lifespan)
    app.state.scorer = scorer

    @app.get("/version/")
    async def version() -> str:
        return SERVICE_VERSION

    @app.post(VALIDATE_PATH, openapi_extra=OPENAPI_BODY)
    async def validate_txt_to_3d_ply(request: Request) -> JSONResponse:
        t0 = time.perf_counter()
        raw = await request.body()
        loop = asyncio.get_running_loop()
        try:
            parsed = await loop.run_in_executor(parser, parse_request, raw)
            report = await loop.run_in_executor(
                executor, scorer.score, parsed.data, parsed.prompt, parsed.compression
            )
        except RequestRefused as exc:
            return failure(exc.status, exc.error, exc.detail)
        except (ResultDecodeError, FramingError) as exc:  # undecodable, or NaN / zero-size extent
            return failure(400, "cannot score this data", str(exc))
        except Exception as exc:  # the service stays up; the caller gets score 0
            log.exception("validation failed")
            return failure(500, "validation failed", f"{type(exc).__name__}: {exc}")
        body = report_response(report, {"parse": parsed.parse_s, "request": time.perf_counter() - t0})
        log.info(
            "score %.3f (iqa %s, alignment %s) for %r",
            body["score"],
            body["iqa"],
            body["alignment_score"],
            parsed.prompt[:80],
        )
        return JSONResponse(body)

    guarded = RequestGuard(app, api_key=api_key, body_limits={VALIDATE_PATH: body_limit})
    return ScoreOnError(guarded, paths=(VALIDATE_PATH,))


class ScoreOnError:
    """ASGI wrapper: a JSON error answered by an outer layer (the guard's 401/413) on a validation
    path gains `"score": 0.0`, so every failure has the subnet's shape."""

    def __init__(self, app: ASGIApp, paths: tuple[str, ...]) -> None:
        self.app = app
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def patched_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message  # hold it: the body may change length
                return
            if start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            try:
                payload = json.loads(body)
                if isinstance(payload, dict) and "score" not in payload:
                    body = json.dumps({"score": 0.0, **payload}).encode()
            except ValueError:
                pass
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, patched_send)
