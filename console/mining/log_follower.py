"""Live mode: read the real miner's log (a pm2 log file) and turn its lines into mining events.

Line format (bittensor's logger): `YYYY-MM-DD HH:MM:SS.mmm | <level centred in 16> | <message>`,
with ANSI colour codes in pm2 files, an optional `name:file.py:line | ` part in trace mode, and
an optional pm2 `--time` prefix. Several workers write interleaved lines. Cooldown, task and
failed-pull lines carry no UID: they are attributed only when the log makes it certain
(console/mining/attribution.py). Feedback lines carry the UID and the task's log id (the prompt,
cut to 97 characters + "..." past 100, or `image:<blake3 hex>` for an image task, whose prompt is
the base64 image); the "Average score" line that follows a feedback line is that validator's.

`LogFollower` survives rotation (the path gets a new inode: the old file is drained first),
truncation (copytruncate: the size drops below the read position), partial lines (held until
their newline arrives) and lines it does not know (counted, skipped).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo
from pathlib import Path
from typing import BinaryIO

from console.mining.attribution import InFlight, PullTracker
from console.mining.events import (
    AveragesReported,
    FeedbackReceived,
    GenerationDone,
    MinerStatus,
    MiningEvent,
    NoValidators,
    PullFailed,
    PullRefused,
    Querying,
    SubmitFailed,
    TaskReceived,
    WorkerStarted,
)

ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
LINE_RE = re.compile(
    r"^(?:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?: )?"  # pm2 --time prefix
    r"(?:\d+\|[\w.-]+\s*\|\s*)?"  # `pm2 logs` console prefix, when someone tees it
    r"(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:[.,]\d{1,6})?)\s*\|\s*(?P<level>[A-Z]+)\s*\|\s"
    r"(?:(?P<where>[\w.-]+:[\w.-]+\.py:\d+) \| )?(?P<msg>.*)$"
)
NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


@dataclass(frozen=True)
class LogLine:
    t: float
    level: str
    message: str


def parse_line(raw: str, tz: tzinfo | None = None) -> LogLine | None:
    """One log line -> (time, level, message); None for lines that are not log records."""
    line = ANSI_RE.sub("", raw).rstrip("\r\n")
    m = LINE_RE.match(line.strip())
    if not m:
        return None
    ts = m["ts"].replace(",", ".")
    try:
        dt = datetime.strptime(ts, "%Y-%m-%d %H:%M:%S.%f" if "." in ts else "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    if tz is not None:
        dt = dt.replace(tzinfo=tz)
    return LogLine(dt.timestamp(), m["level"], m["msg"].rstrip())


def _num(text: str) -> float | None:
    m = re.search(NUM, text)
    return float(m.group(0)) if m else None


_P = {
    "worker": re.compile(r"^Worker \((?P<ep>.+)\) started$"),
    "query": re.compile(r"^Querying task from \[(?P<uid>\d+)\]\.?(?: Stake: (?P<stake>.*))?$"),
    "owner": re.compile(r"^Querying task from the subnet owner"),
    "none": re.compile(r"^No available validators to pull the task"),
    "cooldown": re.compile(
        rf"^Miner is on cooldown for the next: (?P<n>{NUM}) sec\.(?: Total cooldown violations: (?P<v>\d+))?"
    ),
    "task_v": re.compile(r"^Task received\. Prompt: (?P<p>.*)\. Version: \S+$"),
    "task": re.compile(r"^Task received\. Prompt: (?P<p>.*)\.$"),
    "generating": re.compile(r"^Generating for prompt: (?P<p>.*) with timeout (?P<t>\S+) seconds$"),
    "generated": re.compile(r"^Generation completed\. Size: (?P<n>\d+)"),
    "gen_failed": re.compile(r"^Generation failed with code: (?P<c>\d+)"),
    "connect": re.compile(r"^Failed to connect to the endpoint.*?(?P<url>https?://\S+?)\.?$"),
    "timeout": re.compile(r"^The request to the endpoint timed out: (?P<url>\S+)"),
    "unexpected": re.compile(r"^An unexpected (?:client )?error occurred: (?P<e>.*) \((?P<url>\S+)\)$"),
    "feedback": re.compile(
        rf"^Feedback received from \[(?P<uid>\d+)\]\. Score: (?P<s>{NUM}|failed)\. \((?P<id>.*)\)$"
    ),
    "feedback_old": re.compile(
        rf"^Feedback received from \[(?P<uid>\d+)\]\. Prompt: (?P<p>.*)\. Score: (?P<s>{NUM}|failed)\.?$"
    ),
    "feedback_oldest": re.compile(
        rf"^Feedback received\. Prompt: (?P<p>.*)\. Score: (?P<s>{NUM}|failed)\.?$"
    ),
    "average": re.compile(
        rf"^Average score: (?P<a>{NUM})\.(?: Current duel rating: (?P<r>{NUM})\.)? "
        rf"Accepted results \(last (?P<h>\d+)h\): (?P<k>\d+)\. Reward: (?P<w>{NUM})\.?$"
    ),
    "pull_failed": re.compile(r"^Failed to get task from \[(?P<hk>[^\]]+)\]\. Reason: (?P<r>.*?)\.?$"),
    "submit_failed": re.compile(r"^Failed to submit results to \[(?P<hk>[^\]]+)\]\. Reason: (?P<r>.*?)\.?$"),
    "status": re.compile(
        rf"^Miner \| UID:(?P<uid>\d+) \| Block:(?P<b>\d+) \| Stake:(?P<s>{NUM}) \| Trust:(?P<tr>{NUM}) \| "
        rf"Incentive:(?P<i>{NUM}) \| Emission:(?P<e>{NUM})"
    ),
}


PENDING_MAX = 256  # tasks received and not yet answered; a miner has at most one per validator
PENDING_TTL_S = 900.0  # generation (300 s client timeout) + submit (300 s) + slack: then it is lost
FAILED_SKIP_S = 300.0  # the miner's FAILED_VALIDATOR_DELAY (neurons/miner/workers.py)
TEXT_LOG_ID_CHARS = 100  # neurons/common/protocol.py TextTask.log_id: prompt, or its first 97 + "..."


def text_log_id(prompt: str) -> str:
    return prompt if len(prompt) <= TEXT_LOG_ID_CHARS else prompt[: TEXT_LOG_ID_CHARS - 3] + "..."


def image_log_id(prompt: str) -> str | None:
    """ImageTask.log_id: `image:` + the blake3 hex digest of the prompt (the base64 image) as sent."""
    try:
        import blake3  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # without it image tasks are still seen, only not paired with their feedback
        return None
    return "image:" + blake3.blake3(prompt.encode()).hexdigest()


def looks_like_image_prompt(prompt: str) -> bool:
    """A base64 image: long, one token of the base64 alphabet (text prompts are short sentences)."""
    return len(prompt) > 256 and re.fullmatch(r"[A-Za-z0-9+/=_-]+", prompt[:4096]) is not None


PullAnswer = PullRefused | TaskReceived | PullFailed  # the lines that answer a pull, naming no UID


@dataclass
class PendingTask:
    uid: int | None
    t: float
    prompt: str  # what is shown: the text, or the image task's log id
    image: bool


class LogInterpreter:
    """Stateful: lines in order -> events. UID-less lines are attributed only when the log makes it
    certain (see console/mining/attribution.py); the rest come out with uid None (unattributed)."""

    def __init__(self, tz: tzinfo | None = None, hotkeys: dict[str, int] | None = None) -> None:
        self.tz = tz
        self.hotkeys: dict[str, int] = dict(hotkeys or {})  # validator hotkey -> uid (file, or learned)
        self.pulls: PullTracker[PullAnswer] = PullTracker()
        self.pending: OrderedDict[str, PendingTask] = OrderedDict()  # log id -> task
        self.generating: InFlight[str] = InFlight()  # log ids
        self.expired = 0  # pending tasks dropped unanswered (expired or over the bound)
        self._after_feedback: int | None = None  # the UID of the feedback line just read, if any
        self.records = 0
        self.unknown = 0  # log records with a message we do not read
        self.garbage = 0  # lines that are not log records

    def feed(self, raw: str) -> list[MiningEvent]:
        rec = parse_line(raw, self.tz)
        after_feedback, self._after_feedback = self._after_feedback, None
        if rec is None:
            if raw.strip():
                self.garbage += 1
            return []
        self.records += 1
        self._expire(rec.t)
        events = self._message(rec.t, rec.message, after_feedback)
        if events is None:
            self.unknown += 1
            return []
        return events

    # -- pending tasks ------------------------------------------------------------------------
    def _expire(self, t: float) -> None:
        while self.pending:
            key, task = next(iter(self.pending.items()))
            if t - task.t <= PENDING_TTL_S and len(self.pending) <= PENDING_MAX:
                break
            del self.pending[key]
            self.expired += 1

    def _pending_of(self, uid: int) -> str | None:
        keys = [k for k, p in self.pending.items() if p.uid == uid]
        return keys[0] if len(keys) == 1 else None

    def _task_received(self, t: float, prompt: str) -> list[MiningEvent]:
        image = looks_like_image_prompt(prompt)
        key = (image_log_id(prompt) if image else None) or text_log_id(prompt)
        shown = key if image else prompt
        if image and not key.startswith("image:"):
            shown = f"image ({len(prompt) * 3 // 4 // 1024} KiB)"
        ev = TaskReceived(t, None, shown, log_id=key, image=image)
        verdict = self.pulls.answer(t, ev, key=key)
        self.pending.pop(key, None)
        self.pending[key] = PendingTask(verdict.uid, t, shown, image)
        self._expire(t)
        return [replace(ev, uid=verdict.uid)]

    def _late(self, resolved: list[tuple[PullAnswer, int]]) -> list[MiningEvent]:
        out: list[MiningEvent] = []
        for ev, uid in resolved:
            out.append(replace(ev, uid=uid, late=True))
            if isinstance(ev, TaskReceived) and ev.key in self.pending:
                self.pending[ev.key].uid = uid
        return out

    def _message(  # noqa: C901 - one table of cases
        self, t: float, msg: str, after_feedback: int | None
    ) -> list[MiningEvent] | None:
        P = _P
        if m := P["feedback"].match(msg) or P["feedback_old"].match(msg) or P["feedback_oldest"].match(msg):
            groups = m.groupdict()
            log_id = groups.get("id") or text_log_id(groups.get("p") or "")
            task = self.pending.pop(log_id, None)
            uid_text = groups.get("uid")
            uid = int(uid_text) if uid_text is not None else (task.uid if task else None)
            score = None if m["s"] == "failed" else float(m["s"])
            if uid is None:
                return []
            self._after_feedback = uid
            late = self._late(self.pulls.tie(log_id, uid)) if task is not None and task.uid is None else []
            image = log_id.startswith("image:") or bool(task and task.image)
            prompt = task.prompt if task is not None else log_id
            fb = FeedbackReceived(t, uid, prompt, score, log_id=log_id, image=image)
            return [*late, fb]
        if m := P["average"].match(msg):
            r = m["r"]
            return [
                AveragesReported(
                    t,
                    float(m["a"]),
                    int(m["k"]),
                    float(m["w"]),
                    float(r) if r else None,
                    int(m["h"]),
                    uid=after_feedback,  # the same worker writes it right after its feedback line
                )
            ]
        if m := P["query"].match(msg):
            uid = int(m["uid"])
            self.pulls.query(t, uid)
            return [Querying(t, uid, _num(m["stake"] or ""))]
        if P["owner"].match(msg):
            self.pulls.query(t, None)
            return [Querying(t, self.pulls.owner_uid, owner_turn=True)]
        if m := P["cooldown"].match(msg):
            v = m["v"]
            ev = PullRefused(t, None, t + float(m["n"]), int(v) if v is not None else None)
            verdict = self.pulls.answer(t, ev)
            return [replace(ev, uid=verdict.uid)]
        if m := P["task_v"].match(msg) or P["task"].match(msg):
            return self._task_received(t, m["p"])
        if m := P["generating"].match(msg):
            p = m["p"]
            image = looks_like_image_prompt(p)
            self.generating.start((image_log_id(p) if image else None) or text_log_id(p), t)
            return []
        if m := P["generated"].match(msg):
            return [self._generation_end(t, True, size=int(m["n"]))]
        if m := P["gen_failed"].match(msg):
            return [self._generation_end(t, False, error=f"HTTP {m['c']}")]
        for key, label in (("connect", "cannot connect"), ("timeout", "timed out"), ("unexpected", "error")):
            if m := P[key].match(msg):
                return [self._generation_end(t, False, endpoint=m["url"], error=label)]
        if P["none"].match(msg):
            return [NoValidators(t)]
        if m := P["pull_failed"].match(msg):
            hotkey = m["hk"]
            failed = PullFailed(t, hotkey, m["r"])
            verdict = self.pulls.answer(t, failed, uid=self.hotkeys.get(hotkey))
            if verdict.uid is not None:
                self.hotkeys.setdefault(hotkey, verdict.uid)  # learned: certain pull, named hotkey
            return [replace(failed, uid=verdict.uid)]
        if m := P["submit_failed"].match(msg):
            return [self._submit_failed(t, m["hk"], m["r"])]
        if m := P["worker"].match(msg):
            return [WorkerStarted(t, m["ep"])]
        if m := P["status"].match(msg):
            return [
                MinerStatus(
                    t, int(m["uid"]), int(m["b"]), float(m["s"]), float(m["tr"]), float(m["i"]), float(m["e"])
                )
            ]
        return None

    def _submit_failed(self, t: float, hotkey: str, reason: str) -> SubmitFailed:
        """The lost task is the one its validator had given us (one a validator at a time), or the
        only task outstanding; otherwise the loss cannot be placed and stays unattributed."""
        uid = self.hotkeys.get(hotkey)
        key = self._pending_of(uid) if uid is not None else None
        if key is None and uid is None and len(self.pending) == 1:
            key = next(iter(self.pending))
            uid = self.pending[key].uid
            if uid is not None:
                self.hotkeys.setdefault(hotkey, uid)
        task = self.pending.pop(key) if key is not None else None
        return SubmitFailed(
            t, hotkey, reason, uid=uid, prompt=task.prompt if task else None, log_id=key if task else None
        )

    def _generation_end(
        self,
        t: float,
        ok: bool,
        size: int | None = None,
        endpoint: str | None = None,
        error: str | None = None,
    ) -> GenerationDone:
        # end lines carry no prompt: the task is named only when the log makes it certain
        done = self.generating.end()
        key, started = done if done is not None else (None, None)
        task = self.pending.get(key) if key is not None else None
        return GenerationDone(
            t,
            task.uid if task else None,
            task.prompt if task else None,
            endpoint,
            ok,
            time_s=t - started if started is not None else None,
            size=size,
            error=error,
            log_id=key,
        )


class LogFollower:
    """Tail one file by path; `poll()` returns the complete new lines."""

    def __init__(self, path: Path | str, from_start: bool = True, tail_bytes: int | None = None) -> None:
        """`from_start`: read what the file holds; with `tail_bytes`, only its last that many bytes
        (from the first full line in them) on the first open: a long pm2 log's recent hours."""
        self.path = Path(path)
        self.from_start = from_start
        self.tail_bytes = tail_bytes
        self._first_open = True
        self._fh: BinaryIO | None = None
        self._ino: int | None = None
        self._buf = b""
        self.rotations = 0
        self.truncations = 0

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _open(self, at_end: bool) -> bool:
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - held open across polls
        except OSError:
            return False
        self._fh = fh
        st = os.fstat(fh.fileno())
        self._ino = st.st_ino
        if at_end:
            fh.seek(0, os.SEEK_END)
        elif self._first_open and self.tail_bytes is not None and st.st_size > self.tail_bytes:
            fh.seek(st.st_size - self.tail_bytes)
            fh.readline()  # drop the partial line we landed in
        self._first_open = False
        return True

    def _drain(self) -> None:
        if self._fh is not None:
            self._buf += self._fh.read()

    def _split(self, final: bool = False) -> list[str]:
        *lines, self._buf = self._buf.split(b"\n")
        if final and self._buf:
            lines.append(self._buf)
            self._buf = b""
        return [ln.decode("utf-8", errors="replace").rstrip("\r") for ln in lines]

    def poll(self) -> list[str]:
        if self._fh is None and not self._open(at_end=not self.from_start):
            return []
        out: list[str] = []
        self._drain()
        try:
            st = os.stat(self.path)
        except OSError:
            return out + self._split()  # rotated away, no new file yet: keep the old handle
        if st.st_ino != self._ino:  # rotated: old file drained above, start the new one
            out += self._split(final=True)
            self.close()
            self.rotations += 1
            if not self._open(at_end=False):
                return out
            self._drain()
        elif self._fh is not None and st.st_size < self._fh.tell():  # truncated in place
            self.truncations += 1
            self._buf = b""
            self._fh.seek(0)
            self._drain()
        return out + self._split()

    async def follow(
        self, on_line: Callable[[str], None], interval: float = 0.5, stop: asyncio.Event | None = None
    ) -> None:
        try:
            while stop is None or not stop.is_set():
                for line in self.poll():
                    on_line(line)
                await asyncio.sleep(interval)
        finally:
            self.close()
