"""The miner's validator selector (three-gen-subnet `neurons/miner/validator_selector.py`), shared by workers.

Round-robin over validators that serve, have enough stake and are off the miner's local
cooldown; every fifth pull goes to the subnet owner's validator when it is free. The pointer
stays on the validator it returned: the worker marks that validator busy (now + 300 s) right
after selecting it, which moves the next call on. One deliberate difference: with no owner in
the set, the owner's turn is skipped (the subnet's code would return no validator on that turn).
"""

from __future__ import annotations

from dataclasses import dataclass

from console.mining.clock import Clock

OWNER_EVERY = 5
BUSY_MARK_S = 300.0  # the worker's local "busy" cooldown while it pulls and works on a task


@dataclass(frozen=True)
class Candidate:
    uid: int
    stake: float
    serving: bool = True


@dataclass(frozen=True)
class Selection:
    uid: int | None
    owner_turn: bool = False
    stake: float = 0.0


class ValidatorSelector:
    def __init__(
        self,
        candidates: list[Candidate],
        clock: Clock,
        owner_uid: int | None = None,
        min_stake: float = 1000.0,
        start_index: int = 0,
    ) -> None:
        self._candidates = sorted(candidates, key=lambda c: c.uid)
        self._clock = clock
        self._owner_uid = owner_uid
        self._min_stake = min_stake
        self._cooldowns: dict[int, float] = {}
        self._next = start_index % max(1, len(self._candidates))
        self._ask_owner_in = OWNER_EVERY

    def set_cooldown(self, uid: int, until: float) -> None:
        self._cooldowns[uid] = until

    def is_free(self, uid: int, now: float | None = None) -> bool:
        now = self._clock.now() if now is None else now
        return self._cooldowns.get(uid, 0.0) < now

    def eligible(self, c: Candidate) -> bool:
        return c.serving and c.stake >= self._min_stake

    def next(self) -> Selection:
        now = self._clock.now()
        if self._owner_turn(now):
            stake = next((c.stake for c in self._candidates if c.uid == self._owner_uid), 0.0)
            return Selection(self._owner_uid, owner_turn=True, stake=stake)
        if not self._candidates:
            return Selection(None)
        start = self._next
        while True:
            c = self._candidates[self._next]
            if self.eligible(c) and self.is_free(c.uid, now):
                return Selection(c.uid, stake=c.stake)
            self._next = (self._next + 1) % len(self._candidates)
            if self._next == start:
                return Selection(None)

    def _owner_turn(self, now: float) -> bool:
        if self._owner_uid is None:
            return False
        if self._cooldowns.get(self._owner_uid, 0.0) > now:
            return False
        if self._ask_owner_in > 1:
            self._ask_owner_in -= 1
            return False
        self._ask_owner_in = OWNER_EVERY
        return True
