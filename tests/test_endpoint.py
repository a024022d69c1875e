"""`gen404 serve` end to end: a real server subprocess on a free loopback port, tiny CPU presets.

Test presets live in a temporary GEN404_PRESETS_DIR; all extend the bundled smoke preset and
shrink it further so a generation takes about a second on a shared CPU. Faults are injected
with the GEN404_FAULT_INJECT test hook, scoped by prompt text so test order does not matter.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.formats.ply import read_ply
from engine.formats.spz import spz_to_splats
from engine.gate import check_gate
from engine.service.endpoint import GENERATE_BODY_LIMIT
from engine.service.queue import GenerationQueue, QueueFull, ShuttingDown, Worker
from tests.support.server import ServerProcess, running_server

PRESETS = {
    # same models as smoke (tiny random MVDream), far fewer and smaller steps
    "svc_tiny": "extends: smoke\niters: 2\nrender_size: 32\nref_size: 32\nnum_pts: 500\n"
    "densification_interval: 100\ndensity_start_iter: 0\ndensity_end_iter: 0\n",
    "svc_tiny_b": "extends: svc_tiny\nguidance_scale: 30\n",  # same models: no reload
    "svc_reload": "extends: svc_tiny\nseed: 1\n",  # random weights are seeded by the preset: a reload
    "svc_slow": "extends: svc_tiny\niters: 40\n",  # same models; seconds long: queue behind it
    "svc_broken": "iters: [1, 2\n",  # malformed YAML
    "svc_oom": "extends: svc_tiny\nguidance_scale: 20\n",  # its build fails (injected CUDA OOM)
    "svc_pretrained": "extends: svc_tiny\nguidance: mvdream\nweights: pretrained\nmvdream_id: nobody/none\n",
}
FAULTS = (
    "generate:RuntimeError@inject-runtime-error,generate:OutOfMemoryError@inject-oom,"
    "switch:OutOfMemoryError@svc_oom"
)
URLENCODED = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    presets_dir = tmp_path_factory.mktemp("presets")
    for name, text in PRESETS.items():
        (presets_dir / f"{name}.yaml").write_text(text)
    env = {
        "GEN404_PRESETS_DIR": str(presets_dir),
        "GEN404_FAULT_INJECT": FAULTS,
        "GEN404_MODELS_DIR": str(presets_dir / "no-models"),
        "HF_HUB_CACHE": str(presets_dir / "no-hf-cache"),
        "GEN404_STATE_DIR": str(presets_dir / "state"),
    }
    args = ["serve", "--preset", "svc_tiny", "--queue", "1", "--device", "cpu", "--shutdown-grace", "0.2"]
    with running_server(args, env=env) as proc:
        yield proc


def use_preset(server: ServerProcess, name: str) -> dict:
    response = httpx.put(server.url("/preset"), json={"name": name}, timeout=30)
    assert response.status_code == 200, response.text
    server.wait_health(lambda h: h["status"] == "ready" and h["preset"] == name)
    return response.json()


def post(server: ServerProcess, path: str = "/generate/", timeout: float = 120, **kwargs) -> httpx.Response:
    return httpx.post(server.url(path), timeout=timeout, **kwargs)


def test_miner_style_urlencoded_post_returns_a_valid_404_ply(server: ServerProcess) -> None:
    use_preset(server, "svc_tiny")
    before = server.stats()["requests"]["ok"]
    prompt = "a red sports car with chrome wheels " * 8  # 288 chars: /stats keeps 200
    started = time.perf_counter()
    response = post(server, data={"prompt": prompt})  # what aiohttp data={"prompt": ...} sends
    elapsed = time.perf_counter() - started

    assert response.request.headers["content-type"] == URLENCODED
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    splats = read_ply(response.content)
    assert check_gate(splats).passed
    assert int(response.headers["x-splats"]) == len(splats)
    assert response.headers["x-preset"] == "svc_tiny"
    engine_s = float(response.headers["x-generation-time"])
    assert 0 < engine_s <= elapsed
    timings = json.loads(response.headers["x-timings"])
    assert {"render", "guidance", "backward", "export", "encode"} <= set(timings)

    current = server.stats()
    assert current["requests"]["ok"] == before + 1
    last = current["recent"][-1]
    assert last["prompt"] == prompt.strip()[:200]
    assert last["splats"] == len(splats) and last["preset"] == "svc_tiny" and last["score"] is None
    assert last["time_s"] == pytest.approx(engine_s, abs=1e-3)
    assert current["throughput_per_hour"] > 0
    assert current["gpu_memory"] is None  # CPU
    assert current["queue_limit"] == 1 and current["in_flight"] == 0 and current["queue_depth"] == 0


def test_same_models_switch_is_immediate_and_multipart_post_follows_it(server: ServerProcess) -> None:
    use_preset(server, "svc_tiny")
    response = httpx.put(server.url("/preset"), json={"name": "svc_tiny_b"}, timeout=30)
    assert response.status_code == 200
    assert response.json() == {"preset": "svc_tiny_b", "reloaded": False, "status": "ready"}
    health = server.health()
    assert health["status"] == "ready" and health["preset"] == "svc_tiny_b"
    assert httpx.get(server.url("/presets")).json()["current"] == "svc_tiny_b"

    response = post(server, files={"prompt": (None, "a blue wooden chair")})
    assert response.request.headers["content-type"].startswith("multipart/form-data")
    assert response.status_code == 200, response.text
    assert response.headers["x-preset"] == "svc_tiny_b"
    assert check_gate(read_ply(response.content)).passed


def test_switch_to_other_models_builds_beside_the_old_ones_then_serves_spz(server: ServerProcess) -> None:
    use_preset(server, "svc_tiny")
    response = httpx.put(server.url("/preset"), json={"name": "svc_reload", "wait": False}, timeout=30)
    assert response.status_code == 202, response.text
    body = response.json()
    assert (
        body["target"] == "svc_reload" and body["reloaded"] is True and body["state"] in ("building", "done")
    )
    during = post(server, data={"prompt": "a teapot"})  # served while the new models load
    assert during.status_code == 200, during.text
    assert during.headers["x-preset"] in ("svc_tiny", "svc_reload")  # whichever was ready, never a 503
    server.wait_health(lambda h: h["preset"] == "svc_reload" and h["switch"]["state"] == "done")
    switch = httpx.get(server.url("/preset/switch"), timeout=5).json()
    assert (
        switch["state"] == "done"
        and switch["previous"] == "svc_tiny"
        and "loading weights" in switch["phases"]
    )

    response = post(server, "/generate_spz/", data={"prompt": "a green teapot"})
    assert response.status_code == 200, response.text
    assert response.headers["x-preset"] == "svc_reload"
    splats = spz_to_splats(response.content)
    assert len(splats) == int(response.headers["x-splats"]) and check_gate(splats).passed


def test_failed_switch_answers_its_cause_and_keeps_serving(server: ServerProcess) -> None:
    use_preset(server, "svc_tiny")
    response = httpx.put(server.url("/preset"), json={"name": "svc_oom"}, timeout=60)
    assert response.status_code == 500
    body = response.json()
    assert "CUDA out of memory" in body["error"] and "still serving 'svc_tiny'" in body["error"]
    assert body["detail"]["state"] == "failed"
    health = server.health()
    assert health["status"] == "ready" and health["preset"] == "svc_tiny"
    assert health["switch"]["state"] == "failed" and "CUDA out of memory" in health["switch"]["error"]
    response = post(server, data={"prompt": "a chair after a failed switch"})
    assert response.status_code == 200 and response.headers["x-preset"] == "svc_tiny"

    missing = httpx.put(server.url("/preset"), json={"name": "svc_pretrained"}, timeout=30)
    assert missing.status_code == 424
    assert "nobody/none not found locally" in missing.json()["error"]
    assert "gen404 models pull --preset svc_pretrained" in missing.json()["error"]
    assert server.health()["preset"] == "svc_tiny"
    assert httpx.put(server.url("/preset"), json={"name": "svc_tiny", "wait": "yes"}).status_code == 422


def _chunks(total: int) -> Iterator[bytes]:
    yield b"prompt="
    for _ in range(total // 8192):
        yield b"a" * 8192


MULTIPART_BAD = b'--XyZ\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n\xff\xfe chair\r\n--XyZ--\r\n'


@pytest.mark.parametrize(
    ("kwargs", "status", "says"),
    [
        ({"data": {"text": "a chair"}}, 422, "missing form field 'prompt'"),
        ({"data": {"prompt": ""}}, 422, "empty"),
        ({"data": {"prompt": " \t\n "}}, 422, "whitespace"),
        ({"data": {"prompt": "x" * 1025}}, 422, "1024"),
        ({"content": b"prompt=%FF%FEchair", "headers": {"content-type": URLENCODED}}, 400, "UTF-8"),
        ({"content": b"prompt=caf\xe9", "headers": {"content-type": URLENCODED}}, 400, "UTF-8"),
        (
            {"content": MULTIPART_BAD, "headers": {"content-type": "multipart/form-data; boundary=XyZ"}},
            400,
            "UTF-8",
        ),
        ({"json": {"prompt": "a chair"}}, 415, "Content-Type"),
        ({"data": {"prompt": "y" * 70_000}}, 422, "1024"),  # under the body limit: the text rule answers
        ({"data": {"prompt": "y" * (GENERATE_BODY_LIMIT + 1)}}, 413, "too large"),
        (
            {"chunked_bytes": GENERATE_BODY_LIMIT + 16_384, "headers": {"content-type": URLENCODED}},
            413,
            "too large",
        ),
    ],
    ids=[
        "missing",
        "empty",
        "whitespace",
        "too-long",
        "bad-percent",
        "bad-bytes",
        "bad-multipart",
        "json",
        "long-text",
        "over-limit",
        "over-limit-chunked",
    ],  # fmt: skip
)
def test_bad_input_gets_a_clear_4xx_and_the_endpoint_keeps_serving(
    server: ServerProcess, kwargs: dict, status: int, says: str
) -> None:
    if "chunked_bytes" in kwargs:  # no Content-Length: the limit must hold while streaming
        kwargs = dict(kwargs)
        kwargs["content"] = _chunks(kwargs.pop("chunked_bytes"))
    response = post(server, timeout=30, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert says in body["error"] + str(body.get("detail"))
    assert server.health()["status"] in ("ready", "busy")


IMAGE_PROMPT = (Path(__file__).parent / "mining" / "fixtures" / "image_prompt.b64").read_text().strip()


def test_image_prompt_gets_an_explicit_answer_counted_in_stats(server: ServerProcess) -> None:
    """An image task's prompt (a real PNG, base64, url-encoded as the miner sends it) is answered at
    once with a JSON error naming the preset, never generated for, and counted in /stats."""
    use_preset(server, "svc_tiny")
    before = server.stats()["requests"]
    response = post(server, data={"prompt": IMAGE_PROMPT}, timeout=30)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "image prompts are not supported by preset svc_tiny"
    assert body["detail"]["format"] == "png"
    after = server.stats()["requests"]
    assert after["image_prompts"] == before["image_prompts"] + 1
    assert (after["ok"], after["failed"]) == (before["ok"], before["failed"])  # nothing generated
    # a large image still fits the body limit and gets the same answer (text keeps its 1024 rule)
    big = IMAGE_PROMPT + "A" * (4 * 1024 * 1024)
    assert post(server, data={"prompt": big}, timeout=60).json()["error"].startswith("image prompts")


def test_oversized_body_is_refused_before_it_is_read(server: ServerProcess) -> None:
    """Content-Length says 10 MiB; only the headers and 1 KiB are sent, and 413 comes back."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        head = (
            "POST /generate/ HTTP/1.1\r\nHost: test\r\n"
            f"Content-Type: {URLENCODED}\r\nContent-Length: {10 * 1024 * 1024}\r\n\r\n"
        )
        sock.sendall(head.encode() + b"prompt=" + b"a" * 1024)
        reply = sock.recv(65536).decode("latin-1")
    assert reply.startswith("HTTP/1.1 413"), reply


def test_preset_errors(server: ServerProcess) -> None:
    use_preset(server, "svc_tiny")
    unknown = httpx.put(server.url("/preset"), json={"name": "no_such_preset"})
    assert unknown.status_code == 404
    assert "no_such_preset" in unknown.json()["error"]
    assert "svc_tiny" in unknown.json()["detail"]["available"]

    broken = httpx.put(server.url("/preset"), json={"name": "svc_broken"})
    assert broken.status_code == 422
    assert "svc_broken" in broken.json()["detail"]
    assert httpx.get(server.url("/presets")).json()["current"] == "svc_tiny"
    assert server.health()["preset"] == "svc_tiny"

    assert httpx.put(server.url("/preset"), content=b"svc_tiny").status_code == 400
    assert httpx.put(server.url("/preset"), json={"preset": "svc_tiny"}).status_code == 422
    assert httpx.get(server.url("/no/such/path")).json()["error"] == "Not Found"


def test_generation_faults_answer_500_and_the_next_request_works(server: ServerProcess) -> None:
    use_preset(server, "svc_tiny_b")
    failed_before = server.stats()["requests"]["failed"]
    for prompt, kind in [("inject-runtime-error", "RuntimeError"), ("inject-oom", "OutOfMemoryError")]:
        response = post(server, data={"prompt": prompt})
        assert response.status_code == 500
        assert response.json()["error"] == "generation failed"
        assert kind in response.json()["detail"]
    assert server.stats()["requests"]["failed"] == failed_before + 2
    response = post(server, data={"prompt": "a lamp"})
    assert response.status_code == 200, response.text
    assert check_gate(read_ply(response.content)).passed


def _queued_request(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    body = b"prompt=a+queued+request"
    head = f"POST /generate/ HTTP/1.1\r\nHost: test\r\nContent-Type: {URLENCODED}\r\nContent-Length: {len(body)}\r\n\r\n"
    sock.sendall(head.encode() + body)
    return sock


def test_full_queue_refuses_at_once_and_a_disconnected_waiter_leaves_the_queue(server: ServerProcess) -> None:
    use_preset(server, "svc_slow")
    before = server.stats()["requests"]
    result: dict[str, httpx.Response] = {}
    first = threading.Thread(target=lambda: result.update(a=post(server, data={"prompt": "a slow vase"})))
    first.start()
    try:
        server.wait_stats(lambda s: s["in_flight"] == 1)
        waiter = _queued_request(server.port)  # --queue 1: this one waits
        server.wait_stats(lambda s: s["queue_depth"] == 1)

        refused = post(server, data={"prompt": "one too many"}, timeout=10)
        assert refused.status_code == 503
        assert refused.json()["error"] == "queue full"
        assert int(refused.headers["retry-after"]) >= 1
        assert first.is_alive(), "the 503 must come at once, not after the running generation"

        waiter.close()  # the client gives up while queued
        after = server.wait_stats(
            lambda s: s["queue_depth"] == 0 and s["requests"]["dropped"] == before["dropped"] + 1
        )
        assert after["requests"]["rejected"] == before["rejected"] + 1
    finally:
        first.join(120)
    assert result["a"].status_code == 200 and result["a"].headers["x-preset"] == "svc_slow"
    final = server.stats()["requests"]
    assert final["ok"] == before["ok"] + 1  # the dropped waiter never generated


def test_a_client_leaving_mid_generation_stops_it_at_the_next_step(server: ServerProcess) -> None:
    use_preset(server, "svc_slow")
    before = server.stats()["requests"]
    client = _queued_request(server.port)  # runs at once: nothing else is in flight
    server.wait_stats(lambda s: s["in_flight"] == 1)
    client.close()
    gone = before["dropped"] + 1
    after = server.wait_stats(lambda s: s["in_flight"] == 0 and s["requests"]["dropped"] == gone, timeout=60)
    assert after["requests"]["ok"] == before["ok"]  # stopped, not finished and thrown away
    assert "client went away" in server.output()


def test_sigterm_stops_the_inflight_generation_within_the_grace_and_exits_0(server: ServerProcess) -> None:
    """Runs last: it stops the module's server (--shutdown-grace 0.2, svc_slow in flight)."""
    use_preset(server, "svc_slow")
    result: dict[str, httpx.Response] = {}

    def send(key: str, prompt: str) -> threading.Thread:
        thread = threading.Thread(target=lambda: result.update({key: post(server, data={"prompt": prompt})}))
        thread.start()
        return thread

    clients = [send("running", "a slow bowl")]
    server.wait_stats(lambda s: s["in_flight"] == 1)
    clients.append(send("waiting", "a queued bowl"))
    server.wait_stats(lambda s: s["queue_depth"] == 1)
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    for thread in clients:
        thread.join(60)
    assert result["waiting"].status_code == 503  # the line is failed at once
    assert result["waiting"].json()["error"] == "endpoint is shutting down"
    assert result["running"].status_code == 503  # stopped at its next step, not run to the end
    assert result["running"].json()["error"] == "endpoint shut down during generation"
    assert server.proc.wait(30) == 0
    # bound: grace + uvicorn's hard stop (grace + 5 s) + 2 s for the worker; slack for a busy CPU
    assert time.monotonic() - started < 30
    assert "Finished server process" in server.output()


# --- the admission queue alone (no server: exact interleavings the HTTP tests cannot force) ---


async def test_queue_keeps_the_slot_while_the_thread_runs_and_passes_it_on_in_order() -> None:
    worker = Worker("test-worker")
    queue = GenerationQueue(worker, max_waiting=2)
    release = threading.Event()
    order: list[str] = []

    def job(name: str, block: bool = False):
        def run() -> str:
            if block:
                release.wait(10)
            order.append(name)
            return name

        return run

    first = asyncio.ensure_future(queue.run(job("a", block=True)))
    await asyncio.sleep(0.05)
    second = asyncio.ensure_future(queue.run(job("b")))
    third = asyncio.ensure_future(queue.run(job("c")))
    await asyncio.sleep(0.05)
    assert queue.in_flight == 1 and queue.depth == 2
    with pytest.raises(QueueFull):
        await queue.run(job("d"))

    first.cancel()  # the caller gives up, but its thread still runs: the slot stays taken
    await asyncio.sleep(0.05)
    assert queue.in_flight == 1 and queue.depth == 2 and order == []
    release.set()
    assert await second == "b" and await third == "c"
    assert order == ["a", "b", "c"]
    queue.close()
    with pytest.raises(ShuttingDown):
        await queue.run(job("e"))
    worker.stop()


async def test_queue_close_fails_the_waiting_line() -> None:
    worker = Worker("test-worker")
    queue = GenerationQueue(worker, max_waiting=1)
    release = threading.Event()
    running = asyncio.ensure_future(queue.run(lambda: release.wait(10)))
    await asyncio.sleep(0.05)
    waiting = asyncio.ensure_future(queue.run(lambda: "never"))
    await asyncio.sleep(0.05)
    queue.close()
    with pytest.raises(ShuttingDown):
        await waiting
    release.set()
    assert await running is True
    assert queue.in_flight == 0
    worker.stop()


async def test_served_connections_get_tcp_nodelay() -> None:
    """The pre-bound listening socket must let asyncio set TCP_NODELAY on each connection
    (else Nagle + delayed ACK add ~40 ms to keep-alive responses, the miner's case)."""
    from engine.commands.serve import _bind

    sock = _bind("127.0.0.1", 0)
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = writer.get_extra_info("socket")
        accepted.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(on_connect, sock=sock)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        assert await asyncio.wait_for(accepted, 10) != 0
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


def test_a_start_shows_its_import_phase_then_the_others_in_order(tmp_path: Path) -> None:
    # a plain start spends seconds importing torch and the models' libraries (~13 s on the H200
    # box): /health names that phase while it runs, as it does the weights and the warm-up
    seen: list[str] = []

    def watch(health: dict) -> bool:
        if health.get("phase") and (not seen or seen[-1] != health["phase"]):
            seen.append(health["phase"])
        return health.get("status") == "ready"

    env = {"GEN404_STATE_DIR": str(tmp_path / "state")}
    args = ["serve", "--preset", "smoke", "--device", "cpu"]
    with running_server(args, env=env, ready=watch) as server:
        phases = server.health()["phases"]
    assert list(phases)[:2] == ["importing libraries", "loading weights"]
    assert phases["importing libraries"] > 0
    assert seen[0] == "importing libraries", seen
