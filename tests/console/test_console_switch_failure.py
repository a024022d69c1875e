"""Acceptance (issue 16): a preset switch that cannot happen leaves a real endpoint serving.

One Pilot session against a real `gen404 serve --preset smoke` spawned by the console (CPU):
  1. `1` (text_mv_ultra_fast, the bundled preset: MVDream weights, absent here) is refused by the
     console's own check (engine/models.py) in one line; the endpoint stays ready on smoke and
     still answers a request with a valid PLY;
  2. a switch the endpoint accepts but whose build fails (CUDA out of memory, injected with
     GEN404_FAULT_INJECT) keeps it on smoke too, and the toast names the failure;
  3. a switch that works says so, and the table follows.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import httpx
import pytest

from console.app import Gen404Console
from console.config import EndpointSpec
from console.widgets.endpoints import EndpointsTable
from engine.formats.ply import read_ply
from engine.gate import check_gate
from tests.support.console_app import quiet_config, supervising_console
from tests.support.console_testkit import endpoint_health, wait_until
from tests.support.ports import free_port_range

GEN404 = Path(sys.executable).parent / "gen404"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not GEN404.exists() and not shutil.which("gen404"), reason="gen404 not installed"),
]


def toasts(app: Gen404Console) -> list[str]:
    return [str(n.message) for n in app._notifications]


def generate(port: int) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{port}/generate/", data={"prompt": "a red chair"}, timeout=120, trust_env=False
    )


async def test_failed_switches_keep_the_endpoint_serving_its_old_preset(
    console_env: Path, reaper: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    presets = console_env / "presets"
    (presets / "text_mv_ultra_fast.yaml").unlink()  # the bundled one: needs MVDream weights
    (presets / "alt.yaml").write_text("extends: smoke\nguidance_scale: 30\n")  # same models
    (presets / "oom.yaml").write_text("extends: smoke\nguidance_scale: 20\n")
    monkeypatch.setenv("GEN404_MODELS_DIR", str(console_env / "no-models"))  # inherited by the endpoint
    monkeypatch.setenv("HF_HUB_CACHE", str(console_env / "no-hf-cache"))
    monkeypatch.setenv("GEN404_FAULT_INJECT", "switch:OutOfMemoryError@oom")
    import huggingface_hub.constants as hf_constants  # the console's own lookup, in this process

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(console_env / "no-hf-cache"))

    port = free_port_range(2)
    config = quiet_config(
        endpoints=[EndpointSpec(port, "smoke")], log_dir=console_env / "logs", refresh=0.5, first_port=port
    )
    app = supervising_console(config)
    async with app.run_test(size=(200, 50)) as pilot:
        sup = app.supervisor
        table = app.query_one(EndpointsTable)
        try:
            await wait_until(pilot, lambda: port in sup.endpoints and sup.endpoints[port].process is not None)
            reaper.append(sup.endpoints[port].process.pid)
            await wait_until(pilot, lambda: table.cell_text(port, "status") == "ready", timeout=120)
            assert table.selected_port == port

            # 1. missing weights: refused by the console before the endpoint is asked
            await pilot.press("1")
            await wait_until(pilot, lambda: any("text_mv_ultra_fast" in t for t in toasts(app)), timeout=30)
            (refusal,) = [t for t in toasts(app) if "text_mv_ultra_fast" in t]
            assert refusal.startswith(f"gen-{port} stays on smoke: ")
            assert (
                "not found locally" in refusal and "gen404 models pull --preset text_mv_ultra_fast" in refusal
            )
            assert "\n" not in refusal
            assert endpoint_health(port)["status"] == "ready" and endpoint_health(port)["preset"] == "smoke"
            assert endpoint_health(port)["switch"] is None  # the endpoint was never asked
            response = generate(port)
            assert response.status_code == 200 and response.headers["x-preset"] == "smoke"
            assert check_gate(read_ply(response.content)).passed

            # 2. the endpoint builds the preset and the build fails: it keeps serving smoke
            app.action_set_preset("oom")
            await wait_until(pilot, lambda: any("CUDA out of memory" in t for t in toasts(app)), timeout=60)
            (failure,) = [t for t in toasts(app) if "CUDA out of memory" in t]
            assert "switch to 'oom' failed" in failure and "still serving 'smoke'" in failure
            assert endpoint_health(port)["status"] == "ready" and endpoint_health(port)["preset"] == "smoke"
            assert table.cell_text(port, "preset") == "smoke" and sup.endpoints[port].spec.preset == "smoke"
            response = generate(port)
            assert response.status_code == 200 and response.headers["x-preset"] == "smoke"
            assert check_gate(read_ply(response.content)).passed

            # 3. a switch that can work does, and says how it was built
            app.action_set_preset("alt")
            await wait_until(
                pilot, lambda: any(t.startswith(f"gen-{port} → alt") for t in toasts(app)), timeout=60
            )
            assert "models shared" in [t for t in toasts(app) if t.startswith(f"gen-{port} → alt")][0]
            await wait_until(pilot, lambda: table.cell_text(port, "preset") == "alt", timeout=30)
            assert endpoint_health(port)["preset"] == "alt" and sup.endpoints[port].spec.preset == "alt"
        finally:
            await sup.shutdown(stop_endpoints=True)
