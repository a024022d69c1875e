"""The rehearsal hands tasks to endpoints spawned with `n` after it began (issue 17's fix).

Real console, real (stdlib) endpoint processes from the fake launcher: they answer /health
ready and refuse POST /generate/ (501), which the rehearsal records as a failed generation
for that endpoint, so each ledger record names the endpoint that got the task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from console.app import Gen404Console
from console.config import ConsoleConfig, EndpointSpec
from console.gpu import NvmlSampler
from console.mining.options import MiningOptions
from tests.support.console_testkit import wait_until
from tests.support.fakes import FakeNvml
from tests.support.ports import free_port_range


async def test_endpoint_spawned_with_n_gets_rehearsal_tasks(
    console_env: Path, fake_launcher: Any, reaper: list[int], prompts_file: Path
) -> None:
    first = free_port_range(4)
    config = ConsoleConfig(
        endpoints=[EndpointSpec(first, "smoke")],
        log_dir=console_env / "logs",
        refresh=0.25,
        first_port=first,
        mining=MiningOptions(prompts_file=prompts_file, time_scale=100.0, validator_url=None),
    )
    app = Gen404Console(
        config,
        sampler=NvmlSampler(FakeNvml(init_error=True)),
        launcher=fake_launcher,
        gpu_count=lambda: (0, None),
        have_weights=lambda: False,
        state_file=console_env / "state.json",
    )
    async with app.run_test(size=(160, 48)) as pilot:
        sup = app.supervisor
        controller = app.mining.controller
        try:
            await wait_until(pilot, lambda: controller.miner is not None, timeout=30)
            await pilot.press("n")
            await wait_until(pilot, lambda: len(sup.endpoints) == 2)
            second = max(sup.endpoints)
            reaper.extend(ep.process.pid for ep in sup.endpoints.values() if ep.process)
            url = f"http://127.0.0.1:{second}"

            def second_got_a_task() -> bool:
                return any(r.endpoint == url for r in controller.state.ledger.records)

            await wait_until(pilot, second_got_a_task, timeout=60)
            assert controller.miner is not None
            assert [ep.url for ep in controller.miner.endpoints] == [f"http://127.0.0.1:{first}", url]
        finally:
            await sup.shutdown(stop_endpoints=True)
