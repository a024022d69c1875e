"""Helpers for the console tests: the fake endpoint's command line, process reaping, Pilot waits."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx

from console.config import EndpointSpec

FAKE_ENDPOINT = Path(__file__).with_name("fake_endpoint.py")  # run as a script, in its own process


def fake_command(spec: EndpointSpec, *extra: str) -> list[str]:
    return [sys.executable, str(FAKE_ENDPOINT), "--port", str(spec.port), "--preset", spec.preset, *extra]


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


# ---------------------------------------------------------------- Pilot helpers


async def wait_until(pilot: Any, predicate: Any, timeout: float = 20.0, step: float = 0.1) -> None:
    """Let the app run until predicate() is true; fail with the predicate's source on timeout."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            if os.environ.get("CONSOLE_TEST_TIMING"):
                print(f"waited {timeout - (deadline - time.monotonic()):.2f}s")
            return
        await pilot.pause(step)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {getattr(predicate, '__name__', predicate)}"
    )


def screen_text(app: Any) -> str:
    """The current screen as plain text (from Textual's own SVG export; tags and escapes removed)."""
    import html
    import re

    svg = app.export_screenshot()
    body = svg[svg.find("<g class=") :]
    text = re.sub(r"<[^>]+>", "", body)
    return html.unescape(text).replace("\xa0", " ")


def endpoint_health(port: int) -> Any:
    """GET /health of an endpoint on 127.0.0.1 (no proxy from the environment)."""
    return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2, trust_env=False).json()
