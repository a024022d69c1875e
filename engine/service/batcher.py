"""Continuous batching in the endpoint: up to `max_batch` generations share every SDS step.

The batch loop runs as one job on the endpoint's Worker thread (so torch stays on one thread,
and a preset switch or reload queued on the Worker waits for the loop to drain). Requests
admitted by the GenerationQueue (its `slots` = max_batch) come here through `submit()` from
the event loop; at each step boundary the loop lets waiting requests join, drops cancelled
ones, advances every active job one step (engine.batch_pipeline.BatchEngine), and hands each
finished job's result back through its future. When nothing is active or waiting the loop
returns and the Worker is free again. When other work is queued on the Worker (a preset switch,
a reload), the loop admits no one new, lets the active jobs finish, and requeues itself behind
that work, so a busy endpoint still switches presets. Likewise, when the engine factory answers
with a new engine (the preset was swapped while the batch ran), the running batch finishes on
the old one and waiting requests start on the new one.

Torch-free at import: the engine is built by the caller's factory, on the worker thread.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.service.queue import GenerationCancelled, Worker

log = logging.getLogger("gen404.serve")

PROMPT_PREVIEW_CHARS = 60


@dataclass
class _Request:
    prompt: str
    finish: Callable[[Any], Any]  # GenerationResult -> what the future resolves to (encoded output)
    cancel: threading.Event
    future: concurrent.futures.Future
    submitted: float


class Batcher:
    """Holds waiting and active requests; `engine()` (called on the worker) gives the BatchEngine."""

    def __init__(
        self,
        worker: Worker,
        engine: Callable[[], Any],
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.worker = worker
        self._engine = engine
        self._on_error = on_error or (lambda exc: None)
        self._lock = threading.Lock()
        self._pending: deque[_Request] = deque()
        self._looping = False
        self._progress: list[dict[str, Any]] = []

    def submit(
        self, prompt: str, finish: Callable[[Any], Any], cancel: threading.Event
    ) -> concurrent.futures.Future:
        """Queue a generation for the next step boundary (event loop side; returns at once)."""
        request = _Request(prompt, finish, cancel, concurrent.futures.Future(), time.perf_counter())
        with self._lock:
            self._pending.append(request)
            start = not self._looping
            self._looping = True
        if start:
            self.worker.submit(self._loop)
        return request.future

    def jobs(self) -> list[dict[str, Any]]:
        """Per-job progress of the active batch (as of the last step boundary), for /health."""
        with self._lock:
            return [dict(job) for job in self._progress]

    # --- the loop (worker thread) -----------------------------------------------------------

    def _loop(self) -> None:
        try:
            engine = self._engine()
        except BaseException as exc:
            self._fail_pending(exc)
            return
        active: dict[int, _Request] = {}
        while True:
            # the preset changed under us (a new engine): drain this batch, then go on with the new one
            fresh = self._current(engine)
            if fresh is not engine and not active:
                engine = fresh
            yielding = fresh is not engine or self.worker.has_waiting()  # a switch or reload waits
            with self._lock:
                joining: list[_Request] = []
                while self._pending and len(joining) < engine.free and not yielding:
                    joining.append(self._pending.popleft())
                idle = not active and not joining
                if idle:
                    self._progress = []
                    if self._pending and not self.worker.stopping:
                        self.worker.submit(self._loop)  # left waiting for the queued work: run behind it
                    else:
                        self._looping = False
            if idle:
                if self.worker.stopping:  # nobody will run a requeued loop: fail who still waits
                    self._fail_pending(GenerationCancelled("endpoint stopping"))
                return
            for request in joining:
                self._join(engine, request, active)
            for job in list(engine.jobs):
                if active[job.id].cancel.is_set():
                    engine.remove(job)
                    active.pop(job.id).future.set_exception(
                        GenerationCancelled("generation stopped: client gone or endpoint stopping")
                    )
            if not engine.jobs:
                continue
            try:
                finished = engine.step()
            except BaseException as exc:  # one failed step fails the batch it ran; the loop goes on
                log.warning(
                    "batched step failed for %d jobs: %s: %s", len(engine.jobs), type(exc).__name__, exc
                )
                for job in list(engine.jobs):
                    engine.remove(job)
                    active.pop(job.id).future.set_exception(exc)
                self._on_error(exc)
                continue
            for job, result in finished:
                request = active.pop(job.id)
                try:
                    request.future.set_result(request.finish(result))
                except BaseException as exc:
                    request.future.set_exception(exc)
            self._publish(engine)

    def _current(self, engine: Any) -> Any:
        """The engine new requests should join now (the factory's answer; the running one if it
        cannot answer, e.g. while models reload)."""
        try:
            return self._engine()
        except Exception:
            return engine

    def _join(self, engine: Any, request: _Request, active: dict[int, _Request]) -> None:
        if not request.future.set_running_or_notify_cancel():
            return
        if request.cancel.is_set():
            request.future.set_exception(GenerationCancelled("generation stopped before it started"))
            return
        try:
            job = engine.add(request.prompt)
        except BaseException as exc:
            request.future.set_exception(exc)
            self._on_error(exc)
            return
        active[job.id] = request

    def _publish(self, engine: Any) -> None:
        now = time.perf_counter()
        progress = [
            {
                "prompt": job.prompt[:PROMPT_PREVIEW_CHARS],
                "step": job.step,
                "iters": job.iters,
                "progress": round(job.step / max(job.iters, 1), 3),
                "elapsed_s": round(now - job.started, 3),
            }
            for job in engine.jobs
        ]
        with self._lock:
            self._progress = progress

    def _fail_pending(self, exc: BaseException) -> None:
        with self._lock:
            pending, self._pending = list(self._pending), deque()
            self._looping = False
        for request in pending:
            if request.future.set_running_or_notify_cancel():
                request.future.set_exception(exc)


__all__ = ["Batcher"]
