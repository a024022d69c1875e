"""Live mode: the miner's log (real line formats, colour codes, interleaved workers, older formats)
becomes the same state the rehearsal builds; the follower survives rotation, truncation,
partial lines and garbage."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from console.mining.events import FeedbackReceived, PullRefused, Querying, TaskReceived
from console.mining.live import LiveSource, state_from_log
from console.mining.log_follower import LogFollower, LogInterpreter, parse_line
from console.mining.validators import load_validators
from tests.support.miner_log import miner_log_line

FIXTURE = Path(__file__).parent / "fixtures" / "miner.log"
UTC = timezone.utc


def at(hms: str) -> float:
    return datetime.strptime(f"2026-11-20 {hms}", "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()


def line(hms: str, msg: str, level: str = "DEBUG") -> str:
    return miner_log_line(f"2026-11-20 {hms}", msg, level)


def test_parse_line_strips_colour_and_reads_time_level_message() -> None:
    rec = parse_line(line("10:00:23.900", "Querying task from [49]. Stake: 1.0"), UTC)
    assert rec is not None
    assert rec.t == pytest.approx(at("10:00:23.900"))
    assert rec.level == "DEBUG" and rec.message == "Querying task from [49]. Stake: 1.0"
    plain = parse_line(
        "2026-11-20 10:00:23.900 |       INFO       | No available validators to pull the task.", UTC
    )
    assert plain is not None and plain.level == "INFO"
    pm2 = parse_line("2026-11-20T10:00:24: 2026-11-20 10:00:23.900 | DEBUG | x", UTC)
    assert pm2 is not None and pm2.message == "x"
    assert parse_line("Traceback (most recent call last):", UTC) is None
    assert parse_line("", UTC) is None


COOLDOWN_95 = "Miner is on cooldown for the next: 95 sec. Total cooldown violations: 3"


def test_cooldown_line_is_attributed_only_with_one_pull_outstanding() -> None:
    it = LogInterpreter(UTC)
    it.feed(line("10:00:00.000", "Querying task from [49]. Stake: 5000.0"))
    (ev,) = it.feed(line("10:00:00.200", COOLDOWN_95))
    assert isinstance(ev, PullRefused)
    assert ev.uid == 49 and ev.violations == 3
    assert ev.cooldown_until == pytest.approx(at("10:00:00.200") + 95)
    # two workers pulling at once: the line could answer either, so it is nobody's
    it.feed(line("10:00:10.000", "Querying task from [12]. Stake: 5000.0"))
    it.feed(line("10:00:11.000", "Querying task from [27]. Stake: 5000.0"))
    (ev,) = it.feed(line("10:00:11.200", COOLDOWN_95))
    assert ev.uid is None  # the old reader credited the latest Querying line: 27, maybe wrongly


def test_feedback_log_id_resolves_a_long_prompt() -> None:
    it = LogInterpreter(UTC)
    prompt = "x" * 120
    it.feed(line("10:00:00.000", "Querying task from [27]. Stake: 5000.0"))
    (task,) = it.feed(line("10:00:00.100", f"Task received. Prompt: {prompt}."))
    assert isinstance(task, TaskReceived) and task.prompt == prompt and task.uid == 27
    (fb,) = it.feed(line("10:00:20.000", f"Feedback received from [27]. Score: 0.66. ({'x' * 97}...)"))
    assert isinstance(fb, FeedbackReceived) and fb.prompt == prompt and fb.score == 0.66


def test_owner_turn_and_failed_score() -> None:
    it = LogInterpreter(UTC)
    (q,) = it.feed(line("10:00:00.000", "Querying task from the subnet owner"))
    assert isinstance(q, Querying) and q.owner_turn and q.uid is None
    (fb,) = it.feed(line("10:00:05.000", "Feedback received from [0]. Score: failed. (a chair)"))
    assert fb.score is None


def test_fixture_log_gives_validators_scores_and_ledger() -> None:
    state = state_from_log(FIXTURE, load_validators(), tz=UTC)
    now = at("10:07:00.000")
    v = state.validators
    assert set(v) == {0, 12, 27, 49, 81, 133}
    assert state.endpoints == ["http://127.0.0.1:10006/", "http://127.0.0.1:10007/"]
    # 12: accepted 0.71 after a fast task: cooldown from the assignment, estimated from the rules
    assert v[12].last_score == 0.71 and v[12].last_outcome == "accepted"
    assert v[12].cooldown_until == pytest.approx(at("10:00:00.500") + 300)
    assert v[12].estimated
    # 27: 0.0 is every non-accepted answer (rejected +600 s, empty, or a guard): plain cooldown as
    # the lower bound, not read as a penalty
    assert v[27].last_outcome == "zero" and not v[27].penalised and v[27].estimated
    assert v[27].cooldown_until == pytest.approx(at("10:00:01.000") + 300)
    # 49: on cooldown as the validator said, with its violation count
    assert v[49].cooldown_until == pytest.approx(at("10:00:30.300") + 95)
    assert v[49].violations == 3 and not v[49].estimated
    assert v[49].status(now) == "ready"
    # 133: generation failed -> the miner submitted an empty result: no penalty
    assert v[133].last_outcome == "empty" and not v[133].penalised
    # 0: the validator failed to score: plain cooldown
    assert v[0].last_outcome == "validation_failed" and v[0].last_score is None
    # the older miner's format still counts
    assert v[81].last_score == 0.65 and v[81].last_outcome == "accepted"
    assert state.averages is not None
    assert (state.averages.rating, state.averages.accepted, state.averages.window_h) == (1512.3, 17, 4)
    assert state.miner is not None and state.miner.uid == 77
    assert state.no_validator_waits == 1 and state.pull_failures == 1 and state.generation_errors == 1
    led = state.ledger
    assert led.accepted(now) == 2
    assert led.mean_score(now) == pytest.approx((0.65 + 0.71 + 0.0) / 3)
    assert led.acceptance_rate(now) == pytest.approx(2 / 4)
    recent = {r.uid: r for r in state.recent}
    assert recent[12].gen_time_s == pytest.approx(10.5)  # task received -> feedback
    assert recent[81].gen_time_s == pytest.approx(22.0)  # one generation in flight: exact
    assert led.accepted(at("13:00:30.000")) == 1  # 09:00 result left the 4-hour window


def test_fixture_log_counts_garbage_and_unknown_lines() -> None:
    src = LiveSource(FIXTURE, tz=UTC)
    src.poll()
    assert src.interpreter.garbage == 3  # traceback lines and binary junk
    assert src.interpreter.unknown == 1
    assert src.state.events_seen > 20


def test_partial_line_waits_for_its_newline(tmp_path: Path) -> None:
    log = tmp_path / "miner-out.log"
    full = line("10:00:00.000", "Querying task from [12]. Stake: 5000.0")
    log.write_text(full[:30])
    f = LogFollower(log)
    assert f.poll() == []
    with log.open("a") as fh:
        fh.write(full[30:])
    (got,) = f.poll()
    assert parse_line(got, UTC).message.startswith("Querying task from [12]")
    f.close()


def test_rotation_drains_old_file_then_follows_new(tmp_path: Path) -> None:
    log = tmp_path / "miner-out.log"
    log.write_text(line("10:00:00.000", "Querying task from [12]. Stake: 5000.0"))
    src = LiveSource(log, tz=UTC)
    src.poll()
    # the miner writes once more, then pm2-logrotate moves the file and a new one appears
    with log.open("a") as fh:
        fh.write(line("10:00:01.000", "Task received. Prompt: a red chair."))
    os.rename(log, tmp_path / "miner-out__2026-11-20.log")
    log.write_text(line("10:00:09.000", "Feedback received from [12]. Score: 0.8. (a red chair)"))
    src.poll()
    assert src.follower.rotations == 1
    assert src.state.validators[12].last_score == 0.8
    assert src.state.recent[-1].gen_time_s == pytest.approx(8.0)
    src.close()


def test_truncation_restarts_from_the_top(tmp_path: Path) -> None:
    log = tmp_path / "miner-out.log"
    log.write_text(line("09:59:00.000", "No available validators to pull the task.") * 5)
    log.write_text(log.read_text() + line("10:00:00.000", "Querying task from [12]. Stake: 5000.0"))
    src = LiveSource(log, tz=UTC)
    src.poll()
    with log.open("r+") as fh:  # copytruncate
        fh.truncate(0)
    with log.open("a") as fh:
        fh.write(
            line("10:00:01.000", "Miner is on cooldown for the next: 42 sec. Total cooldown violations: 1")
        )
    src.poll()
    assert src.follower.truncations == 1
    assert src.state.validators[12].cooldown_until == pytest.approx(at("10:00:01.000") + 42)
    src.close()


def test_missing_file_then_created(tmp_path: Path) -> None:
    log = tmp_path / "later.log"
    f = LogFollower(log)
    assert f.poll() == []
    shutil.copy(FIXTURE, log)
    assert len(f.poll()) > 30
    f.close()


def test_tail_bytes_starts_at_a_full_line_near_the_end(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    lines = [line(f"10:00:{i:02d}.000", f"Querying task from [{i}]. Stake: 5000.0") for i in range(50)]
    log.write_text("".join(lines))
    f = LogFollower(log, tail_bytes=len(lines[-1]) * 3 - 5)
    got = f.poll()
    assert len(got) == 2  # the partial third-last line is dropped
    assert parse_line(got[-1], UTC).message.startswith("Querying task from [49]")
    with log.open("a") as fh:
        fh.write(line("10:01:00.000", "No available validators to pull the task."))
    assert len(f.poll()) == 1  # later reads follow from where it was
    f.close()
