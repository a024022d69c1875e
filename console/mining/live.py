"""Live mode: a MiningState fed by the real miner's log, once (for scripts) or followed."""

from __future__ import annotations

import asyncio
import time
from datetime import tzinfo
from pathlib import Path

from console.mining.log_follower import LogFollower, LogInterpreter
from console.mining.selector import BUSY_MARK_S
from console.mining.state import MiningState
from console.mining.validators import ValidatorSet

TAIL_BYTES = 64 * 2**20  # a long pm2 log: read its last 64 MiB (hours of lines) on start


def live_state(validators: ValidatorSet | None = None) -> MiningState:
    """Validators appear as the log names them; known ones (YAML) get their own rules and hotkeys,
    others the subnet defaults. Cooldowns after feedback are estimated from those rules (the log
    does not carry `cooldown_until`); a later cooldown line gives the validator's own number."""
    state = MiningState(
        mode="live", scorer_label="validators (read from the miner's log)", busy_limit_s=BUSY_MARK_S
    )
    if validators is not None:
        state.known = {v.uid: (v.rules, v.name) for v in validators.validators}
        state.hotkeys = {v.hotkey: v.uid for v in validators.validators if v.hotkey}
    return state


class LiveSource:
    """Follows a log file into a state; `poll()` is synchronous, `run()` loops."""

    def __init__(
        self,
        path: Path | str,
        state: MiningState | None = None,
        tz: tzinfo | None = None,
        from_start: bool = True,
        tail_bytes: int | None = TAIL_BYTES,
    ) -> None:
        self.follower = LogFollower(path, from_start=from_start, tail_bytes=tail_bytes)
        self.state = state if state is not None else live_state()
        self.interpreter = LogInterpreter(tz, hotkeys=self.state.hotkeys)

    def _apply(self, lines: list[str]) -> int:
        n = 0
        for line in lines:
            for ev in self.interpreter.feed(line):
                self.state.apply(ev)
                n += 1
        return n

    def poll(self) -> int:
        return self._apply(self.follower.poll())

    def flush(self) -> int:
        """Take a last line that has no newline yet (for a one-shot read)."""
        return self._apply(self.follower._split(final=True))

    async def run(self, interval: float = 0.5, stop: asyncio.Event | None = None) -> None:
        try:
            while stop is None or not stop.is_set():
                self.poll()
                # endpoints are known from the workers' start lines; free validators while all are busy
                self.state.observe_capacity(time.time())
                await asyncio.sleep(interval)
        finally:
            self.follower.close()

    def close(self) -> None:
        self.follower.close()


def state_from_log(
    path: Path | str, validators: ValidatorSet | None = None, tz: tzinfo | None = None
) -> MiningState:
    src = LiveSource(path, live_state(validators), tz)
    try:
        src.poll()
        src.flush()
    finally:
        src.close()
    return src.state
