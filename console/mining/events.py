"""Mining events: what the rehearsal loop emits and what the live log follower reads from the miner's log.

Times are unix seconds on the source's clock (the rehearsal's clock, or the log's timestamps).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerStarted:
    t: float
    endpoint: str


@dataclass(frozen=True)
class Querying:
    t: float
    uid: int | None  # None: the subnet owner's turn, uid not logged
    stake: float | None = None
    owner_turn: bool = False


@dataclass(frozen=True)
class NoValidators:
    t: float


@dataclass(frozen=True)
class PullRefused:
    """The validator answered 'on cooldown': no task.

    `uid` None: the log line names no validator and the log does not make its owner certain
    (several pulls were outstanding); the state lists it as unattributed, never guesses.
    `late`: attributed after the fact, once other lines tied the rest of its group to their UIDs.
    """

    t: float
    uid: int | None
    cooldown_until: float | None
    violations: int | None = None
    reason: str = "cooldown"
    late: bool = False


@dataclass(frozen=True)
class TaskReceived:
    """`prompt` is the text shown (an image task's is `image:<hash>`, never the base64 itself);
    `log_id` is how the validator's feedback line names the task (default: the prompt)."""

    t: float
    uid: int | None
    prompt: str
    endpoint: str | None = None
    log_id: str | None = None
    image: bool = False
    late: bool = False

    @property
    def key(self) -> str:
        return self.log_id if self.log_id is not None else self.prompt


@dataclass(frozen=True)
class GenerationDone:
    t: float
    uid: int | None
    prompt: str | None
    endpoint: str | None
    ok: bool
    time_s: float | None = None
    size: int | None = None
    preset: str | None = None
    error: str | None = None
    log_id: str | None = None

    @property
    def key(self) -> str | None:
        return self.log_id if self.log_id is not None else self.prompt


@dataclass(frozen=True)
class FeedbackReceived:
    """A validator's answer to a submit.

    `score` is the feedback's task score (None when it says 'failed'); `measured_score` is what our
    scorer measured (rehearsal only; the validator reports 0.0 for a rejected result).
    `cooldown_until` is None when the source does not say (live logs): the state estimates it.
    """

    t: float
    uid: int
    prompt: str | None
    score: float | None
    outcome: str | None = None
    cooldown_until: float | None = None
    violations: int | None = None
    endpoint: str | None = None
    preset: str | None = None
    gen_time_s: float | None = None
    measured_score: float | None = None
    gate_only: bool = False
    gate_passed: bool | None = None
    log_id: str | None = None
    image: bool = False
    parts: dict[str, float] | None = None  # iqa, alignment_score, ssim, lpips (validation service)
    duel: str | None = None  # rehearsal: "won" | "lost" | "draw" when the task was a duel
    rating: float | None = None  # rehearsal: the duel rating after this task

    @property
    def key(self) -> str | None:
        return self.log_id if self.log_id is not None else self.prompt


@dataclass(frozen=True)
class AveragesReported:
    """One validator's view of the miner (its moving average, duel rating, accepted results in its
    window, reward), written right after that validator's feedback line; `uid` None when the line
    did not directly follow a feedback line (then it cannot be tied to a validator)."""

    t: float
    average: float
    accepted: int
    reward: float
    rating: float | None = None
    window_h: int = 4
    uid: int | None = None


@dataclass(frozen=True)
class MinerStatus:
    t: float
    uid: int
    block: int
    stake: float
    trust: float
    incentive: float
    emission: float


@dataclass(frozen=True)
class PullFailed:
    """'Failed to get task from [HOTKEY]': the miner skips that validator for 300 s on its side."""

    t: float
    validator: str  # hotkey (the miner logs the hotkey, not the uid)
    reason: str
    uid: int | None = None  # known from the validators file's hotkeys, or the only outstanding pull
    late: bool = False


@dataclass(frozen=True)
class SubmitFailed:
    """'Failed to submit results to [HOTKEY]': the result is lost, no feedback, a 300 s local skip.

    `uid`/`prompt` are filled when the log makes them certain (a hotkey the validators file names,
    or a single task outstanding); otherwise the loss is listed as unattributed."""

    t: float
    validator: str  # hotkey
    reason: str
    uid: int | None = None
    prompt: str | None = None
    log_id: str | None = None


MiningEvent = (
    WorkerStarted
    | Querying
    | NoValidators
    | PullRefused
    | TaskReceived
    | GenerationDone
    | FeedbackReceived
    | AveragesReported
    | MinerStatus
    | PullFailed
    | SubmitFailed
)
