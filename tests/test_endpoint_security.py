"""Security rules of gen404 services: where they may bind, the API key, and load failures.

The key server runs `gen404 serve` with GEN404_API_KEY set and a load fault injected
(GEN404_FAULT_INJECT=load:RuntimeError), so no models are built: these tests need none.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from engine.prompts import MAX_PROMPT_CHARS, validate_prompt
from engine.service.security import BindRefused, RequestGuard, check_bind, is_loopback_host, resolve_api_key
from tests.support.ports import free_port
from tests.support.server import ServerProcess, gen404_cmd, running_server

API_KEY = "test-key-3f9a1c-do-not-log"


def test_loopback_hosts() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        assert is_loopback_host(host), host
    for host in ("0.0.0.0", "::", "192.168.1.10", "10.0.0.5", "example.com", ""):
        assert not is_loopback_host(host), host


def test_bind_rule() -> None:
    check_bind("127.0.0.1", None, insecure=False)
    check_bind("0.0.0.0", "k", insecure=False)
    check_bind("0.0.0.0", None, insecure=True)
    with pytest.raises(BindRefused, match="--insecure"):
        check_bind("0.0.0.0", None, insecure=False)


def test_api_key_comes_from_the_flag_else_the_environment() -> None:
    assert resolve_api_key("flag", {"GEN404_API_KEY": "env"}) == "flag"
    assert resolve_api_key(None, {"GEN404_API_KEY": "env"}) == "env"
    assert resolve_api_key(None, {"GEN404_API_KEY": "  "}) is None
    assert resolve_api_key(None, {}) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1"])
def test_serve_refuses_a_non_loopback_bind_without_key_or_insecure(host: str) -> None:
    env = {**os.environ, "GEN404_API_KEY": ""}
    done = subprocess.run(
        gen404_cmd("serve", "--host", host, "--port", str(free_port()), "--preset", "smoke"),
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2
    assert f"refusing to bind {host}" in done.stderr
    assert "--api-key" in done.stderr and "--insecure" in done.stderr


def test_prompt_rule() -> None:
    assert validate_prompt("  a red car \n") == "a red car"
    assert validate_prompt("x" * MAX_PROMPT_CHARS) == "x" * MAX_PROMPT_CHARS
    for bad, says in [
        ("", "empty"),
        (" \t\n", "whitespace"),
        ("x" * 1025, "1024"),
        ("a\x00b", "NUL"),
        (None, "text"),
    ]:
        with pytest.raises(ValueError, match=says):
            validate_prompt(bad)


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[ServerProcess]:
    env = {"GEN404_API_KEY": API_KEY, "GEN404_FAULT_INJECT": "load:RuntimeError"}
    args = ["serve", "--preset", "smoke", "--device", "cpu"]
    with running_server(args, env=env, ready=lambda h: h["status"] == "error") as server:
        yield server


def test_requests_without_the_bearer_key_get_401(keyed_server: ServerProcess) -> None:
    url = keyed_server.url
    for method, path in [("GET", "/stats"), ("GET", "/presets"), ("PUT", "/preset"), ("POST", "/generate/")]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {API_KEY}"}):
            response = httpx.request(method, url(path), headers=headers, data={"prompt": "a chair"})
            assert response.status_code == 401, (method, path, headers)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"] == "unauthorized"
    good = {"Authorization": f"Bearer {API_KEY}"}
    assert httpx.get(url("/stats"), headers=good).status_code == 200
    assert httpx.get(url("/health")).status_code == 200  # open: supervisors probe it
    assert API_KEY not in keyed_server.output()


def test_a_load_failure_is_reported_and_generation_answers_503(keyed_server: ServerProcess) -> None:
    health = keyed_server.health()
    assert health["status"] == "error"
    assert "injected load fault" in health["message"]
    errors = [line for line in keyed_server.output().splitlines() if line.startswith("gen404 serve: error:")]
    assert len(errors) == 1 and "injected load fault" in errors[0]

    response = httpx.post(
        keyed_server.url("/generate/"),
        data={"prompt": "a chair"},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert response.status_code == 503
    assert response.json()["error"] == "models failed to load"
    assert "retry-after" in response.headers


async def test_request_guard_answers_413_even_when_the_app_swallows_the_aborted_read() -> None:
    """A chunked body (no Content-Length) past the limit: 413, whatever the app does next."""

    async def app(scope, receive, send) -> None:  # reads everything, turns any error into a 400
        try:
            while (await receive()).get("more_body"):
                pass
            status = 200
        except Exception:
            status = 400
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guarded = RequestGuard(app, body_limits={"/upload": 1000})

    async def chunks(total: int) -> AsyncIterator[bytes]:
        for _ in range(total // 100):
            yield b"x" * 100

    transport = httpx.ASGITransport(app=guarded)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.post("/upload", content=chunks(900))).status_code == 200
        over = await client.post("/upload", content=chunks(5000))
        assert over.status_code == 413
        assert over.json()["error"] == "request body too large"
        assert (await client.post("/upload", content=b"x" * 1001)).status_code == 413  # Content-Length


def test_a_busy_port_is_a_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            gen404_cmd("serve", "--port", str(port), "--preset", "smoke"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == f"gen404 serve: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
