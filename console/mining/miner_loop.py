"""Rehearsal mode: the subnet miner's loop against simulated validators and real endpoints.

One worker per endpoint, one shared selector (round robin over free validators, the owner's
every fifth pull). Per task, as the miner does: select; mark the validator busy locally
(now + 300 s); pull; with no task, take the validator's `cooldown_until`; else generate through
the endpoint over HTTP (form field `prompt`; an image task's prompt is the base64 image, posted
unchanged), SPZ-compress (an empty result when generation fails, which the validator answers
with the plain cooldown and, for a duel, a lost duel), submit, score through the pluggable
scorer, and set the validator's cooldown to the `cooldown_until` it returns. A failed pull or
submit (the rules' failure rates) makes the miner skip that validator for 300 s on its own side.
With no validator free the worker sleeps 10 s (on the rehearsal's clock, so scaled).

Time: validators live on the rehearsal clock (possibly compressed by --time-scale). A generation
takes real wall seconds, which a compressed clock would stretch; so each task is judged by its
real duration (`finished_at = assigned_at + wall seconds`) and the measured wall time is what
the ledger projects from. `task_time` can replace the measured duration with an emulated one
(benchmarks: a smoke-sized endpoint standing in for a heavier preset); the worker then waits
out the difference on the rehearsal clock.
"""

from __future__ import annotations

import asyncio
import base64
import random
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from console.mining.clock import Clock
from console.mining.events import (
    AveragesReported,
    FeedbackReceived,
    GenerationDone,
    MiningEvent,
    NoValidators,
    PullFailed,
    PullRefused,
    Querying,
    SubmitFailed,
    TaskReceived,
    WorkerStarted,
)
from console.mining.log_follower import FAILED_SKIP_S, image_log_id
from console.mining.rules import SimulatedValidator
from console.mining.scorers import Scorer
from console.mining.selector import BUSY_MARK_S, Candidate, ValidatorSelector
from console.mining.state import MiningState
from console.mining.validators import ValidatorSet

NO_VALIDATOR_SLEEP_S = 10.0
DEFAULT_PROMPTS_FILE = Path(__file__).resolve().parents[1] / "data" / "prompts.txt"
CAPACITY_TICK_S = 1.0  # on the rehearsal clock


@dataclass(frozen=True)
class EndpointSpec:
    url: str
    preset: str | None = None  # label; default: the endpoint's X-Preset header


@dataclass(frozen=True)
class Generation:
    ply: bytes
    wall_s: float
    preset: str | None
    error: str | None = None


TaskTime = Callable[[str | None, float], float]  # (preset, measured wall seconds) -> seconds to charge


def rehearsal_image_prompt(size: int = 64) -> str:
    """A real PNG (a colour gradient), base64 as a validator's image task carries it."""
    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 4 % 256, y * 4 % 256, 128)) for x in range(size)) for y in range(size)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return base64.b64encode(png).decode()


def load_prompts(path: Path | str | None = None) -> list[str]:
    p = Path(path) if path is not None else DEFAULT_PROMPTS_FILE
    prompts = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    prompts = [x for x in prompts if x and not x.startswith("#")]
    if not prompts:
        raise ValueError(f"{p}: no prompts")
    return prompts


class RehearsalMiner:
    def __init__(
        self,
        validators: ValidatorSet,
        endpoints: Sequence[EndpointSpec],
        prompts: Sequence[str],
        scorer: Scorer,
        clock: Clock,
        state: MiningState | None = None,
        task_time: TaskTime | None = None,
        seed: int | None = None,
        http_timeout: float = 300.0,
        on_event: Callable[[MiningEvent], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("rehearsal needs at least one endpoint")
        self.validator_set = validators
        self.endpoints = list(endpoints)
        self.prompts = list(prompts)
        self.scorer = scorer
        self.clock = clock
        self.task_time = task_time
        self.on_event = on_event
        self.http_timeout = http_timeout
        self._transport = transport
        self._rng = random.Random(seed)
        self._running: tuple[httpx.AsyncClient, asyncio.Event] | None = None  # while run() runs
        self._tasks: list[asyncio.Task[None]] = []
        image = rehearsal_image_prompt()
        self.sims = {
            v.uid: SimulatedValidator(
                v.uid, v.rules, clock, rng=random.Random(self._rng.random()), image_prompt=image
            )
            for v in validators.validators
        }
        self.selector = ValidatorSelector(
            [Candidate(v.uid, v.stake, v.serving) for v in validators.validators],
            clock,
            owner_uid=validators.owner_uid,
            min_stake=validators.min_stake,
        )
        self.state = state if state is not None else MiningState(mode="rehearsal")
        self.state.mode = "rehearsal"
        self.state.time_scale = clock.scale
        self.state.scorer_label = scorer.label
        for v in validators.validators:
            self.state.add_validator(v.uid, v.rules, v.name)
        self.busy_endpoints = 0

    def emit(self, ev: MiningEvent) -> None:
        self.state.apply(ev)
        if self.on_event is not None:
            self.on_event(ev)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        async with httpx.AsyncClient(
            timeout=self.http_timeout, transport=self._transport, trust_env=False
        ) as client:
            self._running = (client, stop)
            self._tasks = [asyncio.create_task(self._worker(ep, client, stop)) for ep in self.endpoints]
            self._tasks.append(asyncio.create_task(self._capacity(stop)))
            try:
                await stop.wait()
            finally:
                self._running = None
                for t in self._tasks:
                    t.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)

    def add_endpoint(self, ep: EndpointSpec) -> bool:
        """Hand tasks to one more endpoint (one spawned after the rehearsal began); False if known.

        Before run() it joins the starting list; while running its worker starts at once."""
        if any(known.url == ep.url for known in self.endpoints):
            return False
        self.endpoints.append(ep)
        if self._running is not None:
            client, stop = self._running
            self._tasks.append(asyncio.create_task(self._worker(ep, client, stop)))
        return True

    async def _capacity(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.state.observe_capacity(self.clock.now(), len(self.endpoints))
            await self.clock.sleep(CAPACITY_TICK_S)

    async def _worker(self, ep: EndpointSpec, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        self.emit(WorkerStarted(self.clock.now(), ep.url))
        while not stop.is_set():
            await self.one_task(ep, client)

    async def one_task(self, ep: EndpointSpec, client: httpx.AsyncClient) -> None:
        clock = self.clock
        sel = self.selector.next()
        if sel.uid is None:
            self.emit(NoValidators(clock.now()))
            await clock.sleep(NO_VALIDATOR_SLEEP_S)
            return
        uid = sel.uid
        self.emit(Querying(clock.now(), uid, sel.stake, sel.owner_turn))
        self.selector.set_cooldown(uid, clock.now() + BUSY_MARK_S)
        sim = self.sims[uid]
        if self._rng.random() < sim.rules.pull_failure_rate:
            self.selector.set_cooldown(uid, clock.now() + FAILED_SKIP_S)  # the miner's own skip
            self.emit(PullFailed(clock.now(), f"uid {uid}", "Timeout", uid=uid))
            return
        pull = sim.pull(self._rng.choice(self.prompts))
        if pull.task is None:
            self.selector.set_cooldown(uid, pull.cooldown_until)
            self.emit(PullRefused(clock.now(), uid, pull.cooldown_until, pull.violations))
            return
        task = pull.task
        log_id = (image_log_id(task.prompt) if task.image else None) or task.prompt
        label = log_id if task.image else task.prompt  # never the base64 itself
        self.emit(TaskReceived(task.assigned_at, uid, label, ep.url, log_id=log_id, image=task.image))
        self.busy_endpoints += 1
        try:
            gen = await self._generate(client, ep, task.prompt)
            wall0 = time.monotonic()
            spz_bytes = await asyncio.to_thread(_compress, gen.ply) if gen.ply else b""
            measured = gen.wall_s + (time.monotonic() - wall0)
            charged = self.task_time(gen.preset, measured) if self.task_time else measured
            self.emit(
                GenerationDone(
                    clock.now(),
                    uid,
                    label,
                    ep.url,
                    gen.error is None,
                    charged,
                    len(gen.ply),
                    gen.preset,
                    gen.error,
                    log_id=log_id,
                )
            )
            if self.task_time is not None:
                await clock.sleep(task.assigned_at + charged - clock.now())
            result = await self.scorer.score(task.prompt, spz_bytes) if spz_bytes else None
        finally:
            self.busy_endpoints -= 1
        if self._rng.random() < sim.rules.submit_failure_rate:
            # no feedback: the result is lost, the validator keeps the task, the miner skips it 300 s
            self.selector.set_cooldown(uid, clock.now() + FAILED_SKIP_S)
            self.emit(
                SubmitFailed(clock.now(), f"uid {uid}", "Timeout", uid=uid, prompt=label, log_id=log_id)
            )
            return
        threshold = sim.rules.quality_threshold
        rule_score = result.rule_score(threshold) if result is not None else None
        sub = sim.submit(task.id, spz_bytes, rule_score, finished_at=task.assigned_at + charged)
        self.selector.set_cooldown(uid, sub.cooldown_until)
        self.emit(
            FeedbackReceived(
                clock.now(),
                uid,
                label,
                sub.score,
                outcome=sub.outcome.value,
                cooldown_until=sub.cooldown_until,
                violations=sub.violations,
                endpoint=ep.url,
                preset=gen.preset,
                gen_time_s=charged,
                measured_score=result.score if result is not None else None,
                gate_only=bool(result and result.gate_only),
                gate_passed=result.gate_passed if result is not None else None,
                log_id=log_id,
                image=task.image,
                parts=result.parts if result is not None else None,
                duel=sub.duel,
                rating=sub.rating,
            )
        )
        # the miner logs this validator's view right after its feedback
        self.emit(
            AveragesReported(
                clock.now(), sub.average_score, sub.accepted_in_window, sub.reward, sub.rating, uid=uid
            )
        )

    async def _generate(self, client: httpx.AsyncClient, ep: EndpointSpec, prompt: str) -> Generation:
        url = ep.url.rstrip("/") + "/generate/"
        t0 = time.monotonic()
        try:
            r = await client.post(url, data={"prompt": prompt})
        except httpx.TimeoutException:
            return Generation(b"", time.monotonic() - t0, ep.preset, "timed out")
        except httpx.HTTPError as exc:
            return Generation(b"", time.monotonic() - t0, ep.preset, f"cannot connect: {type(exc).__name__}")
        wall = time.monotonic() - t0
        preset = ep.preset or r.headers.get("X-Preset")
        if r.status_code != 200:
            return Generation(b"", wall, preset, f"HTTP {r.status_code}")
        return Generation(r.content, wall, preset)


def _compress(ply_bytes: bytes) -> bytes:
    from engine.formats import spz

    try:
        return spz.compress(ply_bytes, compression_level=1, workers=1)
    except spz.SpzError:
        return b""  # an unreadable PLY: submitted empty, as the miner would have nothing valid
