"""`slots` generations at a time (one, or a batch's max_batch), a bounded line behind them.

`Worker` is the single thread all torch work of an endpoint runs on (model loading, preset
switches, generations), so GPU state is only ever touched from one thread and the event
loop never blocks. `GenerationQueue` admits at most `slots` jobs at a time (one to that thread,
or up to a batch's `max_batch` to the batcher, which runs them together on it) and keeps up to
`max_waiting` requests in FIFO order; past that it refuses at once (the caller answers 503 +
Retry-After). A waiting request whose client hangs up leaves the line.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class QueueFull(Exception):
    """The line is full: refuse now rather than hold the client."""


class ClientGone(Exception):
    """The client disconnected while waiting for its turn."""


class ShuttingDown(Exception):
    """The endpoint is stopping; no new work is started."""


class GenerationCancelled(Exception):
    """The generation was stopped early (client gone, or the endpoint shutting down)."""


class Worker:
    """A daemon thread running submitted callables one after another, in order.

    Daemon, so a generation stuck in native code cannot keep a stopping process alive.
    """

    def __init__(self, name: str = "gen404-worker") -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future] | None] = (
            queue.SimpleQueue()
        )
        self.stopping = False  # stop() was called: work submitted now never runs
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((fn, future))
        return future

    def stop(self) -> None:
        self.stopping = True
        self._jobs.put(None)

    def has_waiting(self) -> bool:
        """Whether work is queued behind the running job (the batcher yields to it)."""
        return not self._jobs.empty()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to finish; True when it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue  # cancelled before it started
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the awaiting request, which answers 500
                future.set_exception(exc)


class GenerationQueue:
    """Admission control in front of a Worker. Use from the event loop thread only."""

    def __init__(self, worker: Worker, max_waiting: int, slots: int = 1) -> None:
        if max_waiting < 0:
            raise ValueError("max_waiting must be >= 0")
        self.worker = worker
        self.max_waiting = max_waiting
        self.slots = slots  # jobs admitted at once; the endpoint sets it from the preset's max_batch
        self._running = 0  # admitted jobs whose work has not finished
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    @property
    def in_flight(self) -> int:
        return self._running

    def _has_slot(self) -> bool:
        return self._running < max(1, self.slots)

    @property
    def depth(self) -> int:
        return len(self._waiters)

    async def run(
        self,
        fn: Callable[[], T],
        until_gone: Callable[[], Awaitable[Any]] | None = None,
        on_gone_while_running: Callable[[], None] | None = None,
    ) -> T:
        """Run `fn` on the worker when its turn comes and return its result (see run_future)."""
        return await self.run_future(lambda: self.worker.submit(fn), until_gone, on_gone_while_running)

    async def run_future(
        self,
        start: Callable[[], concurrent.futures.Future[T]],
        until_gone: Callable[[], Awaitable[Any]] | None = None,
        on_gone_while_running: Callable[[], None] | None = None,
    ) -> T:
        """When a slot is free, call `start()` (on the event loop: it must only hand the work on,
        e.g. to the worker or the batcher) and return the result of the future it gives.

        Raises QueueFull at once when the line is full, ShuttingDown once close() ran, and
        ClientGone when `until_gone()` (a coroutine that returns when the client hangs up)
        finishes first while waiting. If the client leaves mid-run, `on_gone_while_running`
        is called (to ask the generation to stop early) and the slot stays taken until the
        thread has really finished.
        """
        if self._closed:
            raise ShuttingDown
        if not self._has_slot() or self._waiters:
            if len(self._waiters) >= self.max_waiting:
                raise QueueFull
            await self._wait_turn(until_gone)
        else:
            self._running += 1
        loop = asyncio.get_running_loop()
        try:
            job = start()
        except BaseException:
            self._release()
            raise
        # Release from the thread's completion, not from this coroutine: if this request is
        # cancelled, the slot must stay taken while the thread still runs.
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release))
        result = asyncio.wrap_future(job)
        if until_gone is None:
            return await result
        gone = asyncio.ensure_future(until_gone())
        try:
            done, _ = await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
            if result not in done and on_gone_while_running is not None:
                on_gone_while_running()
            return await result
        finally:
            gone.cancel()

    async def _wait_turn(self, until_gone: Callable[[], Awaitable[Any]] | None) -> None:
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        gone = asyncio.ensure_future(until_gone()) if until_gone is not None else None
        try:
            if gone is None:
                await turn
            else:
                done, _ = await asyncio.wait({turn, gone}, return_when=asyncio.FIRST_COMPLETED)
                if gone in done:
                    raise ClientGone
                turn.result()  # ShuttingDown surfaces here
        except BaseException:
            granted = turn.done() and not turn.cancelled() and turn.exception() is None
            if granted:
                self._release()  # pass the slot on: nobody will use it
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(turn)
                turn.cancel()
            raise
        finally:
            if gone is not None:
                gone.cancel()

    def _release(self) -> None:
        self._running -= 1
        while self._waiters and self._has_slot():
            turn = self._waiters.popleft()
            if not turn.done():
                self._running += 1
                turn.set_result(None)

    def close(self) -> None:
        """Refuse new work and fail everyone still waiting with ShuttingDown."""
        self._closed = True
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_exception(ShuttingDown())
