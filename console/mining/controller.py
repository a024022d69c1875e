"""What the console runs for the mining panes: a rehearsal (default) or a live log follower.

`MiningOptions` holds the command-line choices; `MiningController` owns the state, the clock
and the running source. Plain asyncio: the app starts `run()` as a worker and reads `state`
and `now()` on its refresh tick.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from console.mining.clock import Clock, ScaledClock, SystemClock
from console.mining.live import LiveSource, live_state
from console.mining.miner_loop import EndpointSpec, RehearsalMiner, load_prompts
from console.mining.scorers import DEFAULT_VALIDATOR_URL, Scorer, pick_scorer
from console.mining.state import MiningState
from console.mining.validators import ValidatorSet, load_validators


@dataclass
class MiningOptions:
    miner_log: Path | None = None
    rehearsal: bool = True
    validators_file: Path | None = None
    prompts_file: Path | None = None
    time_scale: float = 1.0
    validator_url: str | None = DEFAULT_VALIDATOR_URL

    @property
    def mode(self) -> str:
        if self.miner_log is not None:
            return "live"
        return "rehearsal" if self.rehearsal else "off"


def add_mining_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("mining (validators, cooldowns, scores)")
    g.add_argument(
        "--miner-log", type=Path, metavar="PATH", help="live mode: follow the real miner's pm2 log file"
    )
    g.add_argument(
        "--rehearsal",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="without a miner log, rehearse the mining loop against simulated validators (default on)",
    )
    g.add_argument("--validators", type=Path, metavar="FILE", help="simulated validators (YAML)")
    g.add_argument("--prompts", type=Path, metavar="FILE", help="rehearsal prompts, one a line")
    g.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        metavar="X",
        help="rehearsal clock runs X times faster (demos)",
    )
    g.add_argument(
        "--validator-url",
        default=DEFAULT_VALIDATOR_URL,
        metavar="URL",
        help="local validation service for rehearsal scores (else a gate-only stand-in)",
    )


def mining_options(args: argparse.Namespace) -> MiningOptions:
    scale = float(getattr(args, "time_scale", 1.0) or 1.0)
    if scale <= 0:
        raise ValueError(f"--time-scale must be positive, got {scale}")
    return MiningOptions(
        miner_log=getattr(args, "miner_log", None),
        rehearsal=bool(getattr(args, "rehearsal", True)),
        validators_file=getattr(args, "validators", None),
        prompts_file=getattr(args, "prompts", None),
        time_scale=scale,
        validator_url=getattr(args, "validator_url", DEFAULT_VALIDATOR_URL),
    )


async def wait_ready(url: str, stop: asyncio.Event, interval: float = 0.5) -> None:
    """Until GET /health says ready or busy (a worker starts when its endpoint can take work)."""
    async with httpx.AsyncClient(timeout=2.0) as client:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError, ValueError):
                r = await client.get(url.rstrip("/") + "/health")
                if r.status_code == 200 and r.json().get("status") in ("ready", "busy"):
                    return
            await asyncio.sleep(interval)


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
        endpoints = list(self._endpoints())
        while not endpoints and not self.stop_event.is_set():
            self.message = "waiting for endpoints"
            await asyncio.sleep(0.5)
            endpoints = list(self._endpoints())
        if self.stop_event.is_set():
            return
        self.message = f"waiting for {len(endpoints)} endpoint(s) to be ready"
        await asyncio.gather(*(wait_ready(ep.url, self.stop_event) for ep in endpoints))
        self.message = ""
        self.miner = RehearsalMiner(self.validators, endpoints, prompts, scorer, self.clock, state=self.state)
        try:
            await self.miner.run(self.stop_event)
        finally:
            await scorer.aclose()

    def stop(self) -> None:
        self.stop_event.set()
