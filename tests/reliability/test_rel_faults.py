"""Process faults on real endpoints, with real signals:

- SIGKILL mid-generation: the requests in flight (the rehearsal miner's and one waiting in the
  queue) fail at once; the console's supervisor marks the endpoint crashed and restarts it with
  growing back-off; the miner submits an empty result (plain cooldown, no penalty), and so does
  every task it pulls while the endpoint restarts.
- SIGSTOP: health checks time out, the supervisor marks it unhealthy, then restarts it; clients
  with a timeout get their timeout, not an endless wait.
- SIGSTOP then SIGCONT (no supervisor): what piled up while frozen does not become a backlog
  of work; the queue stays within its limit and the endpoint serves fresh requests at once.

Every frozen process is SIGCONT'ed and SIGKILLed in `finally` (see SupervisorThread.close).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from console.config import EndpointSpec
from console.mining.clock import ManualClock
from console.mining.events import FeedbackReceived, GenerationDone, MiningEvent, NoValidators
from console.mining.miner_loop import EndpointSpec as MinerEndpoint
from console.mining.miner_loop import RehearsalMiner
from console.mining.scorers import GateOnlyScorer
from console.mining.validators import load_validators
from console.supervisor import BackoffPolicy, Status
from engine.formats.ply import read_ply
from tests.support.ports import free_port
from tests.support.reliability_kit import AUTH, QUEUE, Figures, SupervisorThread, signal_if_alive, wait_for
from tests.support.server import ServerProcess

READY_TIMEOUT_S = 150.0  # a cold start imports torch + diffusers: 5-25 s on a busy 2-core box
PROMPT_FAIL_S = 5.0  # "promptly": in practice milliseconds (the kernel resets the sockets)
BACKOFF = BackoffPolicy(initial=0.5, factor=2.0, maximum=4.0, reset_after=60.0)
UNHEALTHY_AFTER, RESTART_AFTER = 3, 5


@pytest.fixture(scope="module")
def supervised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SupervisorThread, int]]:
    """One `gen404 serve --preset tiny` run by the console's Supervisor (probes every 0.5 s)."""
    root = tmp_path_factory.mktemp("supervised")
    sup = SupervisorThread(
        root / "logs",
        root / "state" / "endpoints.json",
        refresh=0.5,
        policy=BACKOFF,
        unhealthy_after=UNHEALTHY_AFTER,
        restart_after=RESTART_AFTER,
        startup_grace=READY_TIMEOUT_S,
    )
    port = free_port()
    try:
        sup.add(EndpointSpec(port, "tiny"))
        yield sup, port
    finally:
        sup.close()


def _ready(sup: SupervisorThread, port: int) -> tuple[int, int | None]:
    ep = sup.wait_status(port, {Status.READY}, READY_TIMEOUT_S)
    assert ep.process is not None
    return ep.process.pid, ep.process.start_ticks


def _event(sup: SupervisorThread, fragment: str, timeout: float = 10.0) -> tuple[float, str]:
    """(time, text) of the first supervisor event containing `fragment` (events are emitted on
    the supervisor's thread just after the state change a test may already have seen)."""
    return wait_for(
        lambda: next(((at, text) for at, text in sup.events if fragment in text), None),
        timeout,
        what=f"a supervisor event with {fragment!r}",
    )


def _new_pid(sup: SupervisorThread, port: int, old: int, timeout: float) -> int:
    ep = sup.endpoint(port)
    return wait_for(
        lambda: ep.process is not None and ep.process.pid != old and ep.process.pid,
        timeout,
        step=0.02,
        what=f"a new process on port {port} ({ep.status.value}: {ep.message})",
    )


async def _stats(client: httpx.AsyncClient, url: str) -> dict:
    return (await client.get(url + "/stats", timeout=2.0)).json()


async def _until(client: httpx.AsyncClient, url: str, key: str, value: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (await _stats(client, url))[key] != value:
        assert time.monotonic() < deadline, f"/stats {key} never reached {value}"
        await asyncio.sleep(0.02)


def test_sigkill_mid_generation(supervised: tuple[SupervisorThread, int], figures: Figures) -> None:
    sup, port = supervised
    url = f"http://127.0.0.1:{port}"
    pid, ticks = _ready(sup, port)
    # the console's own preset switch: same models, so no reload; restarts keep it
    sup.call(sup.supervisor.set_preset(port, "slow"))
    events: list[MiningEvent] = []
    clock = ManualClock(advance_on_sleep=False)
    validators = load_validators()
    miner = RehearsalMiner(
        validators,
        [MinerEndpoint(url)],
        ["a red bicycle"],
        GateOnlyScorer(),
        clock,
        seed=3,
        on_event=events.append,
    )

    async def scenario() -> dict[str, float]:
        async with httpx.AsyncClient(timeout=300.0) as client:  # the miner's 300 s, unchanged
            task = asyncio.create_task(miner.one_task(miner.endpoints[0], client))
            await _until(client, url, "in_flight", 1)  # the miner's generation is running
            waiting = asyncio.create_task(client.post(url + "/generate/", data={"prompt": "a green lamp"}))
            await _until(client, url, "queue_depth", 1)
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            await task
            miner_s = time.monotonic() - killed
            with pytest.raises(httpx.TransportError):
                await waiting
            waiting_s = time.monotonic() - killed
            # still down or restarting: the miner goes on pulling (as the real one does) until no
            # validator is free; each of those tasks ends empty too
            burn0 = time.monotonic()
            for _ in range(3 * len(validators.validators)):
                await miner.one_task(miner.endpoints[0], client)
                if isinstance(events[-1], NoValidators):
                    break
            burn_s = time.monotonic() - burn0
            return {"killed": killed, "miner_s": miner_s, "waiting_s": waiting_s, "burn_s": burn_s}

    t = asyncio.run(scenario())
    assert t["miner_s"] < PROMPT_FAIL_S and t["waiting_s"] < PROMPT_FAIL_S

    # the rehearsal miner: the task in flight ends empty (the connection was reset), and so does
    # every task pulled while the endpoint restarts: plain cooldowns, no penalty, no violation
    done = [e for e in events if isinstance(e, GenerationDone)]
    feedback = [e for e in events if isinstance(e, FeedbackReceived)]
    assert not done[0].ok and "cannot connect" in (done[0].error or ""), done[0]
    assert all(not d.ok for d in done)
    assert isinstance(events[-1], NoValidators)
    assert len(feedback) == len(validators.validators)
    for fb in feedback:
        assert fb.outcome == "empty" and fb.violations == 0
        assert fb.cooldown_until == pytest.approx(clock.now() + miner.sims[fb.uid].rules.task_cooldown)
    assert not any(v.penalised for v in miner.state.validators.values())

    # the supervisor: crashed (signal 9), restarted after the back-off
    ep = sup.endpoint(port)
    crashed, text = _event(sup, "crashed (signal 9)")
    assert "restart in 0.5s" in text, text
    second = _new_pid(sup, port, pid, 30)
    respawned = time.monotonic()
    assert respawned - crashed >= BACKOFF.initial - 0.05  # it waited out the back-off
    assert ep.restarts == 1

    # a second crash right away (while loading): the back-off grows
    second_ticks = ep.process.start_ticks if ep.process else None
    signal_if_alive(second, second_ticks, signal.SIGKILL)
    wait_for(lambda: ep.quick_crashes == 2, 10, what="the second crash")
    _event(sup, "restart in 1.0s")  # the back-off doubled
    third = _new_pid(sup, port, second, 30)
    _ready(sup, port)
    recovered = time.monotonic()
    assert ep.restarts == 2 and ep.process is not None and ep.process.pid == third

    sup.call(sup.supervisor.set_preset(port, "tiny"))
    r = httpx.post(url + "/generate/", data={"prompt": "a blue vase"}, timeout=60)
    assert r.status_code == 200 and len(read_ply(r.content)) >= 7000

    figures.record("sigkill.inflight_fail_s", t["miner_s"])
    figures.record("sigkill.queued_fail_s", t["waiting_s"])
    figures.record("sigkill.detect_s", crashed - t["killed"])
    figures.record("sigkill.respawn_s", respawned - t["killed"])
    figures.record("sigkill.ready_again_s", recovered - t["killed"])
    figures.record("sigkill.miner_outcome", feedback[0].outcome)
    figures.record("crash_burn.empty_results", len(feedback))
    figures.record("crash_burn.elapsed_s", t["burn_s"])


def test_sigstop_unhealthy_then_restarted(supervised: tuple[SupervisorThread, int], figures: Figures) -> None:
    sup, port = supervised
    url = f"http://127.0.0.1:{port}"
    # answering /health is enough (loading or ready): the supervisor has seen it healthy
    ep = sup.wait_status(port, {Status.LOADING, Status.READY}, READY_TIMEOUT_S)
    assert ep.process is not None
    pid, ticks = ep.process.pid, ep.process.start_ticks
    restarts = ep.restarts
    client_timeout = 2.0

    async def clients(n: int) -> list[tuple[str, float]]:
        async with httpx.AsyncClient(timeout=client_timeout) as client:

            async def one(i: int) -> tuple[str, float]:
                t0 = time.monotonic()
                try:
                    r = await client.post(url + "/generate/", data={"prompt": f"frozen {i}"})
                    return str(r.status_code), time.monotonic() - t0
                except httpx.TimeoutException:
                    return "timeout", time.monotonic() - t0

            return list(await asyncio.gather(*(one(i) for i in range(n))))

    stopped = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        answers = asyncio.run(clients(8))
        assert {kind for kind, _ in answers} == {"timeout"}
        assert max(s for _, s in answers) < client_timeout + 1.0  # their own timeout, no longer
        wait_for(  # status first, then its message: wait for both
            lambda: ep.status is Status.UNHEALTHY and "failed health checks (timed out)" in ep.message,
            30,
            what=f"unhealthy ({ep.status.value}: {ep.message})",
        )
        unhealthy = time.monotonic()
        new = _new_pid(sup, port, pid, 60)
        restarted = time.monotonic()
        assert ep.restarts == restarts + 1
        _event(sup, f"restarted: {RESTART_AFTER} failed health checks")
        wait_for(
            lambda: not os.path.exists(f"/proc/{pid}") or _is_zombie(pid), 10, what="the frozen one gone"
        )
    finally:
        signal_if_alive(pid, ticks, signal.SIGCONT)
        signal_if_alive(pid, ticks, signal.SIGKILL)
    h = wait_for(lambda: _health(url), 60, what="the restarted endpoint's /health")
    assert h["pid"] == new
    figures.record("sigstop.client_timeout_s", client_timeout)
    figures.record("sigstop.slowest_client_s", max(s for _, s in answers))
    figures.record("sigstop.unhealthy_after_s", unhealthy - stopped)
    figures.record("sigstop.restarted_after_s", restarted - stopped)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def _health(url: str) -> dict | None:
    try:
        return httpx.get(url + "/health", timeout=1.0).json()
    except httpx.HTTPError:
        return None


def test_a_frozen_then_resumed_endpoint_drops_what_piled_up(
    endpoint: ServerProcess, figures: Figures
) -> None:
    """While frozen, nothing can answer; clients time out on their own clock. On SIGCONT the
    abandoned requests are dropped (their clients are gone), not generated one by one."""
    pid = endpoint.proc.pid
    before = httpx.get(endpoint.url("/stats"), headers=AUTH).json()["requests"]
    stale = 20

    async def abandoned() -> None:
        limits = httpx.Limits(max_connections=stale)
        async with httpx.AsyncClient(timeout=1.5, limits=limits, headers=AUTH) as client:

            async def one(i: int) -> None:
                with pytest.raises(httpx.TimeoutException):
                    await client.post(endpoint.url("/generate/"), data={"prompt": f"stale {i}"})

            await asyncio.gather(*(one(i) for i in range(stale)))

    os.kill(pid, signal.SIGSTOP)
    try:
        asyncio.run(abandoned())
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed = time.monotonic()
    depths: list[int] = []

    def settled() -> dict | None:
        s = httpx.get(endpoint.url("/stats"), headers=AUTH, timeout=5).json()
        depths.append(s["queue_depth"])
        return s if s["queue_depth"] == 0 and s["in_flight"] == 0 else None

    stats = wait_for(settled, 30, step=0.02, what="the stale line to clear")
    cleared = time.monotonic() - resumed
    t0 = time.monotonic()
    r = httpx.post(endpoint.url("/generate/"), data={"prompt": "a fresh request"}, headers=AUTH, timeout=30)
    fresh = time.monotonic() - t0
    assert r.status_code == 200
    assert max(depths) <= QUEUE
    done = {k: stats["requests"][k] - before[k] for k in ("ok", "dropped", "rejected", "failed")}
    assert done["failed"] == 0
    # at most the one already running when its client left can finish; the rest never run
    assert done["ok"] <= 1, done
    assert done["ok"] + done["dropped"] + done["rejected"] <= stale
    figures.record("sigcont.stale_requests", stale)
    figures.record("sigcont.generated", done["ok"])
    figures.record("sigcont.dropped", done["dropped"])
    figures.record("sigcont.rejected", done["rejected"])
    figures.record("sigcont.cleared_s", cleared)
    figures.record("sigcont.fresh_request_s", fresh)
