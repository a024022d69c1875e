"""The generation endpoint: the HTTP contract the subnet's miner calls (docs/endpoints.md).

`create_app(config)` builds the FastAPI app; `gen404 serve` (engine/commands/serve.py) runs
it under uvicorn. Torch work happens on one worker thread (see queue.py / runtime.py); the
event loop only parses requests, queues them and writes answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.presets import PresetError, format_ref, split_ref
from engine.prompts import validate_prompt
from engine.service import package_version
from engine.service.forms import FormError, detect_image_prompt, parse_form
from engine.service.gpu_telemetry import GpuTelemetry
from engine.service.queue import ClientGone, GenerationQueue, QueueFull, ShuttingDown, Worker
from engine.service.runtime import (
    Fault,
    GenerationCancelled,
    GeneratorFactory,
    ModelHost,
    NotReady,
    Output,
    SwitchRefused,
    UnknownPreset,
    default_factory,
    gpu_memory,
)
from engine.service.security import RequestGuard
from engine.service.stats import ServiceStats

log = logging.getLogger("gen404.serve")

# Sized for image tasks: the miner posts a validator's base64 image url-encoded (about 1.45x the
# image's bytes), so 8 MiB lets images up to ~5.5 MB reach the explicit "not supported" answer
# below instead of a bare 413. Text prompts still stop at 1024 characters (engine/prompts.py).
GENERATE_BODY_LIMIT = 8 * 1024 * 1024
SMALL_BODY_LIMIT = 4 * 1024  # PUT /preset and anything else
LOADING_RETRY_AFTER_S = 5
SCORER_BACKLOG = 8  # self-scores waiting beyond this are skipped, never queued unboundedly

# Self-scoring hook: called on its own thread after the response went out, with the prompt
# and the Splats; the returned number is stored as "score" on the /stats recent entry.
Scorer = Callable[[str, Any], float]


@dataclass
class EndpointConfig:
    preset: str
    device: str = "auto"
    random_weights: bool = False
    queue: int = 4
    api_key: str | None = None
    faults: dict[str, list[Fault]] | None = None  # test hook, see runtime.parse_faults
    shutdown_grace_s: float = 10.0
    scorer: Scorer | None = None
    warm_cache: bool = True  # load/save compiled artefacts under the state dir (engine/warm_cache.py)
    serve_early: bool = True  # answer uncompiled ("warming") while the compiled state builds
    compile_helpers: bool = True  # a cold compile runs in helper processes (compile_helpers.py)


def error(status: int, message: str, detail: Any = None, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": message, "detail": detail}, status_code=status, headers=headers)


class Endpoint:
    """Per-process state shared by the routes."""

    def __init__(self, config: EndpointConfig, factory: GeneratorFactory) -> None:
        self.config = config
        self.worker = Worker("gen404-generate")
        self.queue = GenerationQueue(self.worker, config.queue)
        self.host = ModelHost(
            self.worker,
            config.preset,
            config.device,
            config.random_weights,
            config.faults,
            factory,
            use_cache=config.warm_cache,
            serve_early=config.serve_early,
            use_helpers=config.compile_helpers,
        )
        self.stats = ServiceStats(queue_limit=config.queue)
        self.shutting_down = False
        self.cancel_flags: set[threading.Event] = set()  # one per open generate request
        self._scorer_worker: Worker | None = Worker("gen404-score") if config.scorer else None
        self._score_slots = threading.BoundedSemaphore(SCORER_BACKLOG)

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: recent mean generation time x the batches ahead."""
        mean = self.stats.mean_time_s(last=10) or LOADING_RETRY_AFTER_S
        batches_ahead = self.queue.depth // max(1, self.queue.slots) + 1
        return max(1, min(300, math.ceil(mean * batches_ahead)))

    def begin_shutdown(self) -> None:
        """SIGTERM/SIGINT: refuse new work, fail the waiting line, give in-flight a bound."""
        if self.shutting_down:
            return
        self.shutting_down = True
        self.queue.close()
        log.info("shutting down: the generation in flight (if any) gets %gs", self.config.shutdown_grace_s)
        asyncio.get_running_loop().call_later(self.config.shutdown_grace_s, self._cancel_running)

    def _cancel_running(self) -> None:
        for flag in list(self.cancel_flags):
            flag.set()

    def schedule_score(self, entry_id: int, prompt: str, gaussians: Any) -> BackgroundTask | None:
        scorer, worker = self.config.scorer, self._scorer_worker
        if scorer is None or worker is None or not self._score_slots.acquire(blocking=False):
            return None  # no scorer, or too many waiting: skip rather than fall behind

        def score() -> None:
            try:
                self.stats.set_score(entry_id, float(scorer(prompt, gaussians)))
            except Exception:
                log.warning("self-scoring failed", exc_info=True)
            finally:
                self._score_slots.release()

        async def submit() -> None:  # runs after the response has been sent
            worker.submit(score)

        return BackgroundTask(submit)


def _encode_ply(splats: Any) -> bytes:
    from engine.formats.ply import write_ply

    return write_ply(splats)


def _encode_spz(splats: Any) -> bytes:
    from engine.formats.spz import splats_to_spz

    return splats_to_spz(splats)


async def _until_disconnected(request: Request) -> None:
    """Return when the client hangs up (after the body is read, receive() blocks till then)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(config: EndpointConfig, factory: GeneratorFactory = default_factory) -> FastAPI:
    endpoint = Endpoint(config, factory)
    gpu_telemetry = GpuTelemetry()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        endpoint.host.start()
        yield
        endpoint.begin_shutdown()
        endpoint.worker.stop()
        endpoint.host.stop()

    app = FastAPI(title="gen404 endpoint", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.endpoint = endpoint
    app.add_middleware(
        RequestGuard,
        api_key=config.api_key,
        body_limits={"/generate/": GENERATE_BODY_LIMIT, "/generate_spz/": GENERATE_BODY_LIMIT},
        default_body_limit=SMALL_BODY_LIMIT,
    )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    async def generate(request: Request, encode: Callable[[Any], bytes]) -> Response:
        arrived = time.perf_counter()
        try:
            fields = parse_form(await request.body(), request.headers.get("content-type"))
        except FormError as exc:
            return error(exc.status, str(exc))
        if "prompt" not in fields:
            return error(422, "missing form field 'prompt'", {"fields": sorted(fields)[:20]})
        if (image := detect_image_prompt(fields["prompt"])) is not None:
            endpoint.stats.record_image_prompt()
            preset = endpoint.host.preset_name
            return error(
                422,
                f"image prompts are not supported by preset {preset}",
                {"kind": "image", "format": image.format, "approx_bytes": image.approx_bytes},
            )
        try:
            prompt = validate_prompt(fields["prompt"])
        except ValueError as exc:
            return error(422, f"invalid prompt: {exc}")
        if endpoint.shutting_down:
            return error(503, "endpoint is shutting down", retry_after=LOADING_RETRY_AFTER_S)
        if not endpoint.host.serving:
            endpoint.stats.record_rejected()
            return _not_ready()

        cancel = threading.Event()
        endpoint.cancel_flags.add(cancel)
        max_batch = endpoint.host.max_batch
        endpoint.queue.slots = max_batch  # the preset decides how many run at once
        try:
            if max_batch > 1:  # continuous batching: joins the running batch at its next step
                output: Output = await endpoint.queue.run_future(
                    lambda: endpoint.host.submit(prompt, encode, cancel),
                    until_gone=lambda: _until_disconnected(request),
                    on_gone_while_running=cancel.set,
                )
            else:
                output = await endpoint.queue.run(
                    lambda: endpoint.host.generate(prompt, encode, cancel),
                    until_gone=lambda: _until_disconnected(request),
                    on_gone_while_running=cancel.set,
                )
        except QueueFull:
            endpoint.stats.record_rejected()
            return error(
                503,
                "queue full",
                {"queue_limit": config.queue, "in_flight": endpoint.queue.in_flight},
                retry_after=endpoint.retry_after(),
            )
        except (ClientGone, GenerationCancelled) as exc:
            if endpoint.shutting_down and isinstance(exc, GenerationCancelled):
                endpoint.stats.record_failed()
                return error(503, "endpoint shut down during generation", retry_after=LOADING_RETRY_AFTER_S)
            endpoint.stats.record_dropped()
            log.info("client went away; request dropped")
            return Response(status_code=499)  # nobody is listening any more
        except ShuttingDown:
            return error(503, "endpoint is shutting down", retry_after=LOADING_RETRY_AFTER_S)
        except NotReady:
            endpoint.stats.record_rejected()
            return _not_ready()
        except Exception as exc:
            endpoint.stats.record_failed()
            log.error(
                "generation failed: %s: %s", type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG)
            )
            return error(500, "generation failed", f"{type(exc).__name__}: {exc}")
        finally:
            endpoint.cancel_flags.discard(cancel)

        total = time.perf_counter() - arrived
        entry = endpoint.stats.record_ok(output.time_s, output.splats, output.timings, prompt, output.preset)
        log.info(
            "generated %d splats in %.2fs (request %.2fs, preset %s) for %r",
            output.splats,
            output.time_s,
            total,
            output.preset,
            prompt[:80],
        )
        headers = {
            "X-Generation-Time": f"{output.time_s:.4f}",
            "X-Splats": str(output.splats),
            "X-Preset": output.preset,
            "X-Timings": json.dumps(
                {k: round(v, 4) for k, v in output.timings.items()}, separators=(",", ":")
            ),
            "X-Queue-Time": f"{max(0.0, total - output.time_s - output.timings.get('encode', 0.0)):.4f}",
        }
        return Response(
            output.data,
            media_type="application/octet-stream",
            headers=headers,
            background=endpoint.schedule_score(entry.id, prompt, output.gaussians),
        )

    def _not_ready() -> JSONResponse:
        host = endpoint.host
        if host.status == "error":
            return error(503, "models failed to load", host.message, retry_after=30)
        return error(
            503,
            "models are loading",
            {"progress": host.progress, "message": host.message},
            LOADING_RETRY_AFTER_S,
        )

    @app.post("/generate/")
    async def generate_ply(request: Request) -> Response:
        return await generate(request, _encode_ply)

    @app.post("/generate_spz/")
    async def generate_spz(request: Request) -> Response:
        return await generate(request, _encode_spz)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        info = endpoint.host.health()
        if info["status"] == "ready" and endpoint.queue.in_flight >= info["max_batch"]:
            info["status"] = "busy"  # every slot taken: a new request waits
        info["in_flight"] = endpoint.queue.in_flight
        return {**info, "pid": os.getpid(), "version": VERSION}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        snapshot = endpoint.stats.snapshot(
            in_flight=endpoint.queue.in_flight,
            queue_depth=endpoint.queue.depth,
            gpu_memory=gpu_memory(endpoint.host.device),
        )
        return {**snapshot, "max_batch": endpoint.host.max_batch, "active": endpoint.host.batcher.jobs()}

    @app.get("/presets")
    async def presets() -> dict[str, Any]:
        return {"current": endpoint.host.preset_name, "available": endpoint.host.available()}

    @app.put("/preset")
    async def put_preset(request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # "[[[[..." nests too deep
            return error(400, 'body must be JSON like {"name": "text_mv_fast"}', str(exc))
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            return error(422, "missing preset name", 'send JSON {"name": "<preset>"}')
        wait = body.get("wait", True)
        if not isinstance(wait, bool):
            return error(422, "'wait' must be true or false")
        overrides = body.get("overrides") or {}
        if not isinstance(overrides, dict):
            return error(422, "overrides must be an object", 'e.g. {"iters": 300}')
        host = endpoint.host
        try:
            # a reference "text_mv_fast+iters=300" and/or overrides of the tune keys only
            # (engine.presets.TUNABLE_KEYS), normalised into the one reference /health shows
            base, tuned = split_ref(name)
            name = format_ref(base, {**tuned, **overrides})
            ticket = host.switch(name)
        except UnknownPreset:
            return error(404, f"unknown preset {name!r}", {"available": host.available()})
        except PresetError as exc:
            return error(422, f"preset {name!r} is invalid; keeping {host.preset_name!r}", str(exc))
        except NotReady:
            return error(
                503, "models are loading; switch again when ready", retry_after=LOADING_RETRY_AFTER_S
            )
        except SwitchRefused as exc:
            return error(exc.status, str(exc), {"preset": host.preset_name})
        if ticket is None:
            return JSONResponse({"preset": name, "reloaded": False, "status": host.status})
        log.info("preset switch to %s (%s)", name, "loading models" if ticket.reloaded else "sharing models")
        if not wait:  # 202: poll GET /preset/switch (or /health's "switch")
            return JSONResponse({**ticket.to_dict(), "preset": host.preset_name}, status_code=202)
        await asyncio.wrap_future(ticket.future)
        if ticket.state != "done":
            return error(ticket.status, ticket.error or "switch failed", ticket.to_dict())
        return JSONResponse({"preset": name, "reloaded": ticket.reloaded, "status": host.status})

    @app.get("/preset/switch")
    async def preset_switch() -> JSONResponse:
        ticket = endpoint.host.switching
        if ticket is None:
            return error(404, "no preset switch since the endpoint started")
        return JSONResponse({**ticket.to_dict(), "preset": endpoint.host.preset_name})

    @app.get("/gpu")
    async def gpu() -> dict[str, Any]:
        return await asyncio.to_thread(gpu_telemetry.sample)  # NVML calls block briefly

    return app


VERSION = package_version()
