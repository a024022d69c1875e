"""The batched endpoint end to end: a real `gen404 serve` (tiny CPU preset, max_batch 4) over HTTP,
and the admission queue with several slots."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from engine.formats.ply import read_ply
from engine.gate import check_gate
from engine.service.queue import GenerationQueue, QueueFull, Worker
from tests.support.server import ServerProcess, running_server

PRESETS = {
    # tiny MVDream on CPU; long enough (40 steps) that concurrent requests overlap in one batch
    "svc_batch": "extends: smoke\niters: 40\nrender_size: 32\nref_size: 32\nnum_pts: 300\n"
    "max_gaussians: 600\ndensification_interval: 10\ndensity_start_iter: 5\ndensity_end_iter: 25\n"
    "max_batch: 4\n",
    "svc_batch_b": "extends: svc_batch\nguidance_scale: 30\n",  # same models: switched beside
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    presets_dir = tmp_path_factory.mktemp("presets")
    for name, text in PRESETS.items():
        (presets_dir / f"{name}.yaml").write_text(text)
    env = {"GEN404_PRESETS_DIR": str(presets_dir)}
    args = ["serve", "--preset", "svc_batch", "--queue", "1", "--device", "cpu", "--shutdown-grace", "0.2"]
    with running_server(args, env=env) as proc:
        yield proc


def _send_all(server: ServerProcess, prompts: list[str]) -> tuple[list[threading.Thread], dict]:
    results: dict[str, tuple[httpx.Response, float]] = {}

    def send(prompt: str) -> None:
        started = time.monotonic()
        response = httpx.post(server.url("/generate/"), data={"prompt": prompt}, timeout=300)
        results[prompt] = (response, time.monotonic() - started)

    threads = [threading.Thread(target=send, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    return threads, results


def _raw_request(port: int, prompt: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    body = b"prompt=" + prompt
    head = (
        "POST /generate/ HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def test_simultaneous_requests_share_steps_and_each_gets_a_valid_ply(server: ServerProcess) -> None:
    prompts = ["a red car", "a wooden chair", "a blue vase", "a small house"]
    threads, results = _send_all(server, prompts)
    try:
        # the four run as one batch: /health lists them with their own progress
        health = server.wait_health(lambda h: len(h["active"]) == 4, timeout=60)
        assert health["max_batch"] == 4 and health["status"] == "busy"
        assert {job["prompt"] for job in health["active"]} == set(prompts)
        assert all(0 <= job["step"] <= job["iters"] == 40 for job in health["active"])
        during = server.stats()
        assert during["in_flight"] == 4 and during["max_batch"] == 4 and len(during["active"]) == 4
    finally:
        for t in threads:
            t.join(300)
    for prompt in prompts:
        response, elapsed = results[prompt]
        assert response.status_code == 200, response.text
        splats = read_ply(response.content)
        assert check_gate(splats).passed
        assert len(splats) == int(response.headers["x-splats"])
        engine_s = float(response.headers["x-generation-time"])
        assert 0 < engine_s <= elapsed  # per job: its own time in the batch, not the batch's
    after = server.wait_health(lambda h: h["status"] == "ready" and h["active"] == [])
    assert after["in_flight"] == 0


def test_past_max_batch_and_the_queue_it_refuses_at_once(server: ServerProcess) -> None:
    before = server.stats()["requests"]
    threads, results = _send_all(server, [f"a batch mate {k}" for k in range(4)])
    waiter = None
    try:
        server.wait_stats(lambda s: s["in_flight"] == 4)
        waiter = _raw_request(server.port, b"a+waiting+request")  # --queue 1: this one waits
        server.wait_stats(lambda s: s["queue_depth"] == 1)
        started = time.monotonic()
        refused = httpx.post(server.url("/generate/"), data={"prompt": "one too many"}, timeout=10)
        assert refused.status_code == 503 and refused.json()["error"] == "queue full"
        assert int(refused.headers["retry-after"]) >= 1
        assert time.monotonic() - started < 5 and any(t.is_alive() for t in threads)
    finally:
        for t in threads:
            t.join(300)
        if waiter is not None:
            waiter.settimeout(300)
            reply = waiter.recv(64)
            waiter.close()
            assert reply.startswith(b"HTTP/1.1 200")  # joined once a slot freed
    assert all(r.status_code == 200 for r, _ in results.values())
    after = server.wait_stats(lambda s: s["in_flight"] == 0)["requests"]
    assert after["ok"] == before["ok"] + 5 and after["rejected"] == before["rejected"] + 1


def test_a_client_leaving_drops_only_its_job(server: ServerProcess) -> None:
    before = server.stats()["requests"]
    threads, results = _send_all(server, ["a lamp that stays"])
    leaver = _raw_request(server.port, b"a+lamp+that+leaves")
    try:
        server.wait_health(lambda h: len(h["active"]) == 2, timeout=60)
        leaver.close()
        server.wait_health(lambda h: [j["prompt"] for j in h["active"]] == ["a lamp that stays"], timeout=60)
    finally:
        for t in threads:
            t.join(300)
    assert results["a lamp that stays"][0].status_code == 200
    after = server.wait_stats(lambda s: s["in_flight"] == 0)["requests"]
    assert after["ok"] == before["ok"] + 1 and after["dropped"] == before["dropped"] + 1


async def test_queue_admits_up_to_slots_at_once_then_lines_up() -> None:
    worker = Worker("test-worker")
    queue = GenerationQueue(worker, max_waiting=1, slots=2)
    gates = [threading.Event() for _ in range(3)]

    def job(k: int):  # noqa: ANN202
        def run() -> int:
            gates[k].wait(10)
            return k

        return run

    import concurrent.futures

    pool = concurrent.futures.ThreadPoolExecutor(3)  # stands in for the batcher: runs jobs side by side
    tasks = [asyncio.ensure_future(queue.run_future(lambda k=k: pool.submit(job(k)))) for k in range(3)]
    await asyncio.sleep(0.05)
    assert queue.in_flight == 2 and queue.depth == 1
    with pytest.raises(QueueFull):
        await queue.run_future(lambda: pool.submit(job(0)))
    gates[1].set()
    assert await tasks[1] == 1
    await asyncio.sleep(0.05)
    assert queue.in_flight == 2 and queue.depth == 0  # the waiter took the freed slot
    gates[0].set()
    gates[2].set()
    assert [await t for t in tasks] == [0, 1, 2]
    assert queue.in_flight == 0
    pool.shutdown()
    worker.stop()


# --- the batcher alone, with a stand-in engine (exact interleavings the HTTP tests cannot force) ---


class _Job:
    def __init__(self, id: int, prompt: str, iters: int) -> None:  # noqa: A002
        self.id, self.prompt, self.iters, self.step, self.started = id, prompt, iters, 0, time.perf_counter()


class _CountingEngine:
    """BatchEngine's serving surface: add / remove / step / jobs / free; records each step's jobs."""

    def __init__(self, max_batch: int, iters: int, step_gate: threading.Event) -> None:
        self.max_batch, self.iters, self.jobs, self.steps = max_batch, iters, [], []
        self.step_gate = step_gate
        self._next = 1

    @property
    def free(self) -> int:
        return self.max_batch - len(self.jobs)

    def add(self, prompt: str) -> _Job:
        job = _Job(self._next, prompt, self.iters)
        self._next += 1
        self.jobs.append(job)
        return job

    def remove(self, job: _Job) -> None:
        self.jobs.remove(job)

    def step(self) -> list:
        self.step_gate.wait(10)
        self.steps.append([j.prompt for j in self.jobs])
        for job in self.jobs:
            job.step += 1
        done = [j for j in self.jobs if j.step >= j.iters]
        for job in done:
            self.jobs.remove(job)
        return [(j, f"{j.prompt} done") for j in done]


def test_batcher_joins_at_step_boundaries_and_yields_to_a_queued_switch() -> None:
    from engine.service.batcher import Batcher

    worker = Worker("test-batcher")
    gate = threading.Event()
    engine = _CountingEngine(max_batch=3, iters=3, step_gate=gate)  # room for c at once
    batcher = Batcher(worker, lambda: engine)
    never = threading.Event()
    a = batcher.submit("a", lambda r: r, never)
    b = batcher.submit("b", lambda r: r, never)
    time.sleep(0.1)  # the loop is inside its first step (gate closed) with a and b
    switched: list[list[str]] = []
    switch = worker.submit(lambda: switched.append([j.prompt for j in engine.jobs]))  # e.g. PUT /preset
    c = batcher.submit("c", lambda r: r, never)
    gate.set()
    assert a.result(10) == "a done" and b.result(10) == "b done" and c.result(10) == "c done"
    switch.result(10)
    assert switched == [[]]  # the switch ran between batches, with no job in flight
    assert engine.steps == [["a", "b"]] * 3 + [["c"]] * 3  # c had a slot but waited for the switch
    worker.stop()


def test_batcher_cancels_only_the_flagged_job() -> None:
    from engine.service.batcher import Batcher
    from engine.service.queue import GenerationCancelled

    worker = Worker("test-batcher")
    gate = threading.Event()
    engine = _CountingEngine(max_batch=4, iters=5, step_gate=gate)
    batcher = Batcher(worker, lambda: engine)
    stay, leave = threading.Event(), threading.Event()
    kept = batcher.submit("kept", lambda r: r, stay)
    gone = batcher.submit("gone", lambda r: r, leave)
    time.sleep(0.1)  # both are in the first step (gate closed)
    leave.set()  # the client hangs up mid-step
    gate.set()
    with pytest.raises(GenerationCancelled):
        gone.result(10)
    assert kept.result(10) == "kept done"
    assert engine.steps == [["kept", "gone"]] + [["kept"]] * 4  # dropped at the next boundary
    worker.stop()


def test_batcher_fails_the_waiting_when_the_worker_stops() -> None:
    from engine.service.batcher import Batcher
    from engine.service.queue import GenerationCancelled

    worker = Worker("test-batcher")
    gate = threading.Event()
    engine = _CountingEngine(max_batch=1, iters=2, step_gate=gate)
    batcher = Batcher(worker, lambda: engine)
    never = threading.Event()
    running = batcher.submit("running", lambda r: r, never)
    time.sleep(0.1)  # inside its first step
    waiting = batcher.submit("waiting", lambda r: r, never)  # no slot: waits in the batcher
    worker.stop()  # the endpoint is shutting down
    gate.set()
    assert running.result(10) == "running done"  # the job in flight finishes
    with pytest.raises(GenerationCancelled):
        waiting.result(10)  # not left hanging behind the stopped Worker


def test_batcher_moves_to_a_new_engine_after_the_running_batch_drains() -> None:
    from engine.service.batcher import Batcher

    worker = Worker("test-batcher")
    gate = threading.Event()
    old = _CountingEngine(max_batch=4, iters=3, step_gate=gate)
    new = _CountingEngine(max_batch=4, iters=3, step_gate=gate)
    current = [old]
    batcher = Batcher(worker, lambda: current[0])
    never = threading.Event()
    a = batcher.submit("a", lambda r: r, never)
    time.sleep(0.1)  # a is in its first step on the old engine
    current[0] = new  # the preset is swapped while the batch runs
    b = batcher.submit("b", lambda r: r, never)  # a slot is free on the old engine, but it is stale
    gate.set()
    assert a.result(10) == "a done" and b.result(10) == "b done"
    assert old.steps == [["a"]] * 3 and new.steps == [["b"]] * 3
    worker.stop()


def test_a_switch_mid_batch_lets_the_batch_finish_on_the_old_preset(server: ServerProcess) -> None:
    threads, results = _send_all(server, ["a chair before", "a lamp before"])
    try:
        server.wait_health(lambda h: len(h["active"]) == 2, timeout=60)
        switched = httpx.put(server.url("/preset"), json={"name": "svc_batch_b"}, timeout=120)
        assert switched.status_code == 200, switched.text
        after = httpx.post(server.url("/generate/"), data={"prompt": "a vase after"}, timeout=300)
    finally:
        for t in threads:
            t.join(300)
        httpx.put(server.url("/preset"), json={"name": "svc_batch"}, timeout=120)  # for the other tests
    assert [results[p][0].headers["x-preset"] for p in ("a chair before", "a lamp before")] == [
        "svc_batch"
    ] * 2
    assert after.status_code == 200 and after.headers["x-preset"] == "svc_batch_b"
