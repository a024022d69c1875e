"""What the console runs for the mining panes: a rehearsal (default) or a live log follower.

`MiningOptions` holds the command-line choices (their argparse flags live in
console/mining/options.py); `MiningController` owns the state, the clock and the running source.
Plain asyncio and Textual-free: the app starts `run()` as a worker and subscribes to `changes`
(MiningChanged: the pane title or the status message changed); between changes it redraws the
countdowns from `state` and `now()` on its refresh tick.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from console.endpoint_client import ANSWERING
from console.mining.clock import Clock, ScaledClock, SystemClock
from console.mining.live import LiveSource, live_state
from console.mining.miner_loop import EndpointSpec, RehearsalMiner, load_prompts
from console.mining.options import MiningOptions
from console.mining.scorers import Scorer, pick_scorer
from console.mining.state import MiningState
from console.mining.validators import ValidatorSet, load_validators
from console.publisher import Publisher


@dataclass(frozen=True)
class MiningChanged:
    """The controller's title or status message changed (published on `MiningController.changes`)."""

    title: str
    message: str


async def wait_ready(url: str, stop: asyncio.Event, interval: float = 0.5) -> None:
    """Until GET /health says it answers (a worker starts when its endpoint can take work)."""
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError, ValueError):
                r = await client.get(url.rstrip("/") + "/health")
                if r.status_code == 200 and r.json().get("status") in ANSWERING:
                    return
            await asyncio.sleep(interval)


FOLLOW_S = 0.5  # how often the rehearsal looks for endpoints added since it began


class MiningController:
    def __init__(
        self,
        options: MiningOptions,
        endpoints: Callable[[], Sequence[EndpointSpec]] = list,
        clock: Clock | None = None,
        scorer: Scorer | None = None,
    ) -> None:
        self.options = options
        self._endpoints = endpoints
        self.validators: ValidatorSet = load_validators(options.validators_file)
        if clock is None:
            clock = ScaledClock(options.time_scale) if options.mode == "rehearsal" else SystemClock()
        self.clock = clock
        self._scorer = scorer
        self.stop_event = asyncio.Event()
        self.miner: RehearsalMiner | None = None
        self.live: LiveSource | None = None
        if options.mode == "live":
            self.state = live_state(self.validators)
        else:
            self.state = MiningState(mode=options.mode, time_scale=self.clock.scale)
            for v in self.validators.validators:
                self.state.add_validator(v.uid, v.rules, v.name)
        self.message = ""
        self.changes: Publisher[MiningChanged] = Publisher()

    def set_message(self, text: str) -> None:
        """The status line shown before the reward summary ("" clears it); listeners hear of it."""
        if text != self.message:
            self.message = text
            self._publish()

    def _publish(self) -> None:
        self.changes.publish(MiningChanged(self.title(), self.message))

    def now(self) -> float:
        return self.clock.now()

    def title(self) -> str:
        if self.options.mode == "live":
            return f"LIVE · {self.options.miner_log}"
        if self.options.mode == "off":
            return "mining: off (--no-rehearsal, no --miner-log)"
        scale = f" · time ×{self.clock.scale:g}" if self.clock.scale != 1 else ""
        scorer = self.state.scorer_label or "choosing scorer…"
        return f"REHEARSAL (simulated validators){scale} · scores: {scorer}"

    async def run(self) -> None:
        try:
            await self._run_source()
        except Exception as exc:  # shown on the reward line instead of vanishing in the worker
            self.set_message(f"mining stopped: {type(exc).__name__}: {exc}")
            raise

    async def _run_source(self) -> None:
        if self.options.mode == "live":
            assert self.options.miner_log is not None
            self.live = LiveSource(self.options.miner_log, self.state)
            await self.live.run(stop=self.stop_event)
        elif self.options.mode == "rehearsal":
            await self._rehearse()

    async def _rehearse(self) -> None:
        prompts = load_prompts(self.options.prompts_file)
        scorer = self._scorer or await pick_scorer(self.options.validator_url)
        self.state.scorer_label = scorer.label
        self._publish()  # the title names the scorer
        endpoints = list(self._endpoints())
        while not endpoints and not self.stop_event.is_set():
            self.set_message("waiting for endpoints")
            await asyncio.sleep(0.5)
            endpoints = list(self._endpoints())
        if self.stop_event.is_set():
            return
        self.set_message(f"waiting for {len(endpoints)} endpoint(s) to be ready")
        await asyncio.gather(*(wait_ready(ep.url, self.stop_event) for ep in endpoints))
        self.set_message("")
        self.miner = RehearsalMiner(self.validators, endpoints, prompts, scorer, self.clock, state=self.state)
        follow = asyncio.create_task(self._follow_endpoints(self.miner))
        try:
            await self.miner.run(self.stop_event)
        finally:
            follow.cancel()
            await asyncio.gather(follow, return_exceptions=True)
            await scorer.aclose()

    async def _follow_endpoints(self, miner: RehearsalMiner, interval: float = FOLLOW_S) -> None:
        """Endpoints that appear later (spawned with `n`) get tasks once their /health says ready."""
        waiting: dict[str, asyncio.Task[None]] = {}

        async def join(ep: EndpointSpec) -> None:
            await wait_ready(ep.url, self.stop_event)
            miner.add_endpoint(ep)

        try:
            while not self.stop_event.is_set():
                known = {ep.url for ep in miner.endpoints}
                for ep in self._endpoints():
                    if ep.url not in known and ep.url not in waiting:
                        waiting[ep.url] = asyncio.create_task(join(ep))
                await asyncio.sleep(interval)
        finally:
            for task in waiting.values():
                task.cancel()

    def stop(self) -> None:
        self.stop_event.set()
