"""Every HTTP client the console uses talks to its endpoints directly, whatever the proxy settings.

A miner's shell often exports HTTP(S)_PROXY/ALL_PROXY; httpx honours them unless
`trust_env=False`, and a proxy cannot reach 127.0.0.1 on the miner's box. Here the proxy
variables point at a closed port: a client that honoured them could not reach the real
loopback server.
"""

from __future__ import annotations

import ast
import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from console.endpoint_client import EndpointClient
from console.mining.controller import wait_ready
from console.mining.scorers import service_reachable
from tests.support.ports import free_port

CONSOLE = Path(__file__).resolve().parents[2] / "console"


class _Ready(BaseHTTPRequestHandler):
    """Answers every GET with 200 and a ready /health-style body (also /version/ for the scorer)."""

    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"status": "ready", "preset": "smoke", "version": "test"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoint_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def dead_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


async def test_the_proxy_would_break_a_default_client(endpoint_url: str, dead_proxy: None) -> None:
    async with httpx.AsyncClient(timeout=1.0) as client:  # trust_env=True: the test's premise
        with pytest.raises(httpx.HTTPError):
            await client.get(endpoint_url + "/health")


async def test_console_clients_ignore_proxy_settings(endpoint_url: str, dead_proxy: None) -> None:
    client = EndpointClient(host="127.0.0.1")
    try:
        port = int(endpoint_url.rsplit(":", 1)[1])
        assert (await client.probe(port)).ok
    finally:
        await client.aclose()
    await asyncio.wait_for(wait_ready(endpoint_url, asyncio.Event()), 5.0)
    assert await service_reachable(endpoint_url) is True


def test_every_httpx_client_in_console_sets_trust_env_false() -> None:
    """A new client added later without trust_env=False fails here (source check over console/)."""
    offenders = []
    for path in sorted(CONSOLE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name not in ("AsyncClient", "Client"):
                continue
            trust = [k for k in node.keywords if k.arg == "trust_env"]
            if not (trust and isinstance(trust[0].value, ast.Constant) and trust[0].value.value is False):
                offenders.append(f"{path.relative_to(CONSOLE.parent)}:{node.lineno}")
    assert offenders == []
