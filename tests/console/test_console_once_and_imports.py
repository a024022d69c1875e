"""`--once [--json]` against a running endpoint, and the console never importing torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx

from console.app import main
from console.config import EndpointSpec
from console.supervisor import launch_endpoint
from tests.support.console_testkit import fake_command, kill_group
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]


def _wait_ready(port: int) -> None:
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            if (
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1, trust_env=False).json()["status"]
                == "ready"
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("fake endpoint not ready")


def test_once_json_and_text(console_env: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    up, down = free_port(), free_port()
    proc = launch_endpoint(
        EndpointSpec(up, "text_mv_fast"), console_env / "logs" / "x.log", command=fake_command
    )
    try:
        _wait_ready(up)
        rc = main(["--once", "--json", "--endpoint", str(up), "--endpoint", str(down)])
        data = json.loads(capsys.readouterr().out)
        assert rc == 1  # one probed endpoint is down
        by_port = {e["port"]: e for e in data["endpoints"]}
        assert by_port[up]["status"] == "ready" and by_port[up]["preset"] == "text_mv_fast"
        assert by_port[up]["done"] == 3 and by_port[up]["p95_s"] == 4.0 and by_port[up]["pid"] == proc.pid
        assert by_port[down]["status"] == "down" and by_port[down]["error"] == "connection refused"
        assert "gpus" in data["gpus"] and ("error" in data["gpus"])
        rc = main(["--once", "--endpoint", str(up)])
        out = capsys.readouterr().out
        assert rc == 0
        header, row = [line for line in out.splitlines() if "gen-" in line or line.startswith("name")][:2]
        assert header.split()[:4] == ["name", "port", "status", "preset"]
        assert row.split()[:4] == [f"gen-{up}", str(up), "ready", "text_mv_fast"]
    finally:
        kill_group(proc.pid)


def test_console_never_imports_torch(console_env: Path) -> None:
    script = textwrap.dedent(
        """
        import asyncio, sys
        from console.app import Gen404Console, main
        from console.config import ConsoleConfig

        async def session():
            app = Gen404Console(ConsoleConfig(endpoints=[], refresh=0.25))
            async with app.run_test(size=(120, 40)) as pilot:
                await pilot.pause(0.6)
                await pilot.press("question_mark")
                await pilot.pause()
                await pilot.press("escape")
                await pilot.press("ctrl+p")
                await pilot.pause(0.3)
            return app

        app = asyncio.run(session())
        main(["--once", "--json", "--endpoint", "1"])
        assert "torch" not in sys.modules, "console imported torch"
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "diffusers", "transformers", "open_clip"))
        assert not heavy, heavy
        print("TORCH-FREE OK")
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=90, cwd=REPO
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "TORCH-FREE OK" in res.stdout


def test_once_json_lists_alerts(console_env: Path) -> None:
    from console.config import ConsoleConfig
    from console.gpu import NvmlSampler
    from console.snapshot import collect, format_text
    from tests.support.fakes import FakeNvml

    nvml = FakeNvml(count=1)
    assert collect(ConsoleConfig(endpoints=[]), NvmlSampler(nvml))["alerts"] == []
    nvml.temp = 88
    nvml.clock_mask = 0x20  # sw-thermal
    data = collect(ConsoleConfig(endpoints=[]), NvmlSampler(nvml))
    assert [(a["source"], a["kind"], a["severity"]) for a in data["alerts"]] == [
        ("GPU0", "thermal", "error"),
        ("GPU0", "throttle", "error"),
    ]
    json.dumps(data)  # what --json prints
    assert "ALERT GPU0: 88 °C (>= 83 °C)" in format_text(data)
