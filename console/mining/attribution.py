"""Tie the miner's UID-less log lines to the validator they belong to, only when the log makes it certain.

The miner's workers share one log and its lines carry no worker id. A pull is logged as
`Querying task from [UID]` (or `... the subnet owner`, no UID) before the worker awaits the
validator (up to 12 s); its answer (`Miner is on cooldown ...`, `Task received ...`,
`Failed to get task from [HOTKEY]`) names no UID. With several workers, other pulls and answers
can fall in between, so "the latest Querying line" is often another validator.

`PullTracker` keeps the pulls still waiting for an answer in a group. An answer is attributed
when exactly one pull is outstanding and no earlier answer of the group is unexplained (or when
the line names a hotkey we can map to a UID). Otherwise it is kept in the group, unattributed,
and the group closes once it has as many answers as pulls. A later line can tie one answer to a
UID after the fact (a feedback line names the UID and the task's log id, so the `Task received`
that answered one of the pulls is explained); when a closed group is down to one pull and one
answer, that answer is certain too and comes back as a late attribution. Nothing is ever
credited by guess: an answer nobody can place stays unattributed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

PULL_TTL_S = 60.0  # a pull times out after 12 s and is always answered by a line; 60 s is ample
GROUP_TTL_S = 3600.0  # closed groups wait this long for a later tie, then are forgotten
MAX_GROUPS = 64

A = TypeVar("A")


@dataclass
class _Pull:
    uid: int | None  # None: the subnet owner's turn, UID not known yet
    t: float


@dataclass
class _Answer(Generic[A]):
    payload: A
    key: Hashable | None  # what can tie it later (a task's log id)
    t: float


@dataclass
class _Group(Generic[A]):
    pulls: list[_Pull] = field(default_factory=list)
    answers: list[_Answer[A]] = field(default_factory=list)

    def take_pull(self, uid: int) -> str | None:
        """Remove `uid`'s pull, else the owner's (a UID that pulled none of these must be the owner's
        turn); returns "uid", "owner" or None (no such pull: the group cannot explain it)."""
        for want, found in ((uid, "uid"), (None, "owner")):
            for i, p in enumerate(self.pulls):
                if p.uid == want:
                    del self.pulls[i]
                    return found
        return None


@dataclass(frozen=True)
class Verdict:
    uid: int | None  # the validator, when certain
    owner: bool = False  # certain it was the subnet owner's turn, UID unknown

    @property
    def certain(self) -> bool:
        return self.uid is not None or self.owner


UNKNOWN = Verdict(None)


class PullTracker(Generic[A]):
    def __init__(self, pull_ttl_s: float = PULL_TTL_S, group_ttl_s: float = GROUP_TTL_S) -> None:
        self.pull_ttl_s = pull_ttl_s
        self.group_ttl_s = group_ttl_s
        self.open: _Group[A] = _Group()
        self.closed: deque[_Group[A]] = deque(maxlen=MAX_GROUPS)
        self.owner_uid: int | None = None  # learned when a tie shows which UID the owner's turn was

    def outstanding(self) -> int:
        return len(self.open.pulls) - len(self.open.answers)

    def query(self, t: float, uid: int | None) -> None:
        self._expire(t)
        if uid is None:
            uid = self.owner_uid
        self.open.pulls.append(_Pull(uid, t))

    def answer(self, t: float, payload: A, key: Hashable | None = None, uid: int | None = None) -> Verdict:
        """An answer line; `uid` when the line itself identifies the validator (a mapped hotkey)."""
        self._expire(t)
        g = self.open
        if uid is not None:
            g.take_pull(uid)
            self._settle()
            return Verdict(uid)
        if len(g.pulls) - len(g.answers) <= 0:
            return UNKNOWN  # no pull of ours outstanding (the log started mid-way)
        if len(g.pulls) == 1 and not g.answers:
            pull = g.pulls.pop()
            return Verdict(pull.uid, owner=pull.uid is None)
        g.answers.append(_Answer(payload, key, t))
        self._settle()
        return UNKNOWN

    def tie(self, key: Hashable, uid: int) -> list[tuple[A, int]]:
        """A later line says the answer kept under `key` came from `uid`: returns the answers that
        this makes certain in turn (payload, uid), for late attribution."""
        for g in [self.open, *self.closed]:
            for i, a in enumerate(g.answers):
                if a.key == key:
                    del g.answers[i]
                    found = g.take_pull(uid)
                    if found is None:
                        return []
                    if found == "owner":
                        self.learn_owner(uid)
                    return self._resolve(g)
        return []

    def learn_owner(self, uid: int) -> None:
        self.owner_uid = uid
        for g in [self.open, *self.closed]:
            for p in g.pulls:
                if p.uid is None:
                    p.uid = uid

    def _resolve(self, g: _Group[A]) -> list[tuple[A, int]]:
        out: list[tuple[A, int]] = []
        closed = g is not self.open
        if closed and len(g.pulls) == 1 and len(g.answers) == 1 and g.pulls[0].uid is not None:
            out.append((g.answers[0].payload, g.pulls[0].uid))
            g.pulls.clear()
            g.answers.clear()
        if closed and not g.pulls:
            self.closed.remove(g)
        return out

    def _settle(self) -> None:
        g = self.open
        if g.answers and len(g.answers) >= len(g.pulls):
            self.closed.append(g)
            self.open = _Group()

    def _expire(self, t: float) -> None:
        g = self.open
        stale = [p for p in g.pulls if t - p.t > self.pull_ttl_s]
        if stale:
            if g.answers:  # unexplained answers: keep the whole group for later ties
                self.closed.append(g)
                self.open = _Group()
            else:
                g.pulls = [p for p in g.pulls if t - p.t <= self.pull_ttl_s]
        while self.closed and self.closed[0].answers and t - self.closed[0].answers[-1].t > self.group_ttl_s:
            self.closed.popleft()


class InFlight(Generic[A]):
    """Generations in flight: an end line (no prompt on it) names its task only when one is running
    and no earlier end was ambiguous; the ambiguity clears when all of them have ended."""

    def __init__(self, ttl_s: float = 900.0) -> None:
        self.ttl_s = ttl_s
        self.items: list[tuple[A, float]] = []
        self.unexplained = 0

    def start(self, item: A, t: float) -> None:
        self.items = [(x, t0) for x, t0 in self.items if t - t0 <= self.ttl_s]
        self.unexplained = min(self.unexplained, len(self.items))
        self.items.append((item, t))

    def end(self) -> tuple[A, float] | None:
        if len(self.items) == 1 and self.unexplained == 0:
            return self.items.pop()
        if self.items:
            self.unexplained += 1
            if self.unexplained >= len(self.items):
                self.items.clear()
                self.unexplained = 0
        return None
