"""Live mode: read the real miner's log (a pm2 log file) and turn its lines into mining events.

Line format (bittensor's logger): `YYYY-MM-DD HH:MM:SS.mmm | <level centred in 16> | <message>`,
with ANSI colour codes in pm2 files, an optional `name:file.py:line | ` part in trace mode, and
an optional pm2 `--time` prefix. Several workers write interleaved lines. A cooldown line
carries no UID: it belongs to the latest `Querying task from [UID]` line. Feedback lines carry
the UID and the task's log id (the prompt, cut to 97 characters + "..." past 100).

`LogFollower` survives rotation (the path gets a new inode: the old file is drained first),
truncation (copytruncate: the size drops below the read position), partial lines (held until
their newline arrives) and lines it does not know (counted, skipped).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path

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
    "status": re.compile(
        rf"^Miner \| UID:(?P<uid>\d+) \| Block:(?P<b>\d+) \| Stake:(?P<s>{NUM}) \| Trust:(?P<tr>{NUM}) \| "
        rf"Incentive:(?P<i>{NUM}) \| Emission:(?P<e>{NUM})"
    ),
}


class LogInterpreter:
    """Stateful: lines in order -> events (resolves the UID of UID-less lines and log ids)."""

    def __init__(self, tz: tzinfo | None = None) -> None:
        self.tz = tz
        self.last_uid: int | None = None
        self.pending: dict[str, int | None] = {}  # prompt -> uid it was received from
        self.generating: list[tuple[str, float]] = []  # (prompt, started) in order
        self.records = 0
        self.unknown = 0  # log records with a message we do not read
        self.garbage = 0  # lines that are not log records

    def feed(self, raw: str) -> list[MiningEvent]:
        rec = parse_line(raw, self.tz)
        if rec is None:
            if raw.strip():
                self.garbage += 1
            return []
        self.records += 1
        events = self._message(rec.t, rec.message)
        if events is None:
            self.unknown += 1
            return []
        return events

    def _resolve_prompt(self, log_id: str) -> str:
        if log_id in self.pending:
            return log_id
        if log_id.endswith("..."):
            head = log_id[:-3]
            for p in self.pending:
                if p.startswith(head):
                    return p
        return log_id

    def _message(self, t: float, msg: str) -> list[MiningEvent] | None:  # noqa: C901 - one table of cases
        P = _P
        if m := P["feedback"].match(msg) or P["feedback_old"].match(msg) or P["feedback_oldest"].match(msg):
            groups = m.groupdict()
            prompt = self._resolve_prompt(groups.get("id") or groups.get("p") or "")
            uid_text = groups.get("uid")
            uid = int(uid_text) if uid_text is not None else self.pending.get(prompt, self.last_uid)
            self.pending.pop(prompt, None)
            score = None if m["s"] == "failed" else float(m["s"])
            if uid is None:
                return []
            return [FeedbackReceived(t, uid, prompt, score)]
        if m := P["query"].match(msg):
            uid = int(m["uid"])
            self.last_uid = uid
            return [Querying(t, uid, _num(m["stake"] or ""))]
        if P["owner"].match(msg):
            self.last_uid = None
            return [Querying(t, None, owner_turn=True)]
        if m := P["cooldown"].match(msg):
            v = m["v"]
            return [PullRefused(t, self.last_uid, t + float(m["n"]), int(v) if v is not None else None)]
        if m := P["task_v"].match(msg) or P["task"].match(msg):
            self.pending[m["p"]] = self.last_uid
            return [TaskReceived(t, self.last_uid, m["p"])]
        if m := P["generating"].match(msg):
            self.generating.append((m["p"], t))
            return []
        if m := P["generated"].match(msg):
            return [self._generation_end(t, True, size=int(m["n"]))]
        if m := P["gen_failed"].match(msg):
            return [self._generation_end(t, False, error=f"HTTP {m['c']}")]
        for key, label in (("connect", "cannot connect"), ("timeout", "timed out"), ("unexpected", "error")):
            if m := P[key].match(msg):
                return [self._generation_end(t, False, endpoint=m["url"], error=label)]
        if m := P["average"].match(msg):
            r = m["r"]
            return [
                AveragesReported(
                    t, float(m["a"]), int(m["k"]), float(m["w"]), float(r) if r else None, int(m["h"])
                )
            ]
        if P["none"].match(msg):
            return [NoValidators(t)]
        if m := P["pull_failed"].match(msg):
            return [PullFailed(t, m["hk"], m["r"])]
        if m := P["worker"].match(msg):
            return [WorkerStarted(t, m["ep"])]
        if m := P["status"].match(msg):
            return [
                MinerStatus(
                    t, int(m["uid"]), int(m["b"]), float(m["s"]), float(m["tr"]), float(m["i"]), float(m["e"])
                )
            ]
        return None

    def _generation_end(
        self,
        t: float,
        ok: bool,
        size: int | None = None,
        endpoint: str | None = None,
        error: str | None = None,
    ) -> GenerationDone:
        # lines carry no prompt: with one generation in flight the match is exact, else oldest first
        prompt, started = self.generating.pop(0) if self.generating else (None, None)
        uid = self.pending.get(prompt) if prompt is not None else None
        time_s = t - started if started is not None and len(self.generating) == 0 else None
        return GenerationDone(t, uid, prompt, endpoint, ok, time_s=time_s, size=size, error=error)


class LogFollower:
    """Tail one file by path; `poll()` returns the complete new lines."""

    def __init__(self, path: Path | str, from_start: bool = True, tail_bytes: int | None = None) -> None:
        """`from_start`: read what the file holds; with `tail_bytes`, only its last that many bytes
        (from the first full line in them) on the first open: a long pm2 log's recent hours."""
        self.path = Path(path)
        self.from_start = from_start
        self.tail_bytes = tail_bytes
        self._first_open = True
        self._fh = None
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
