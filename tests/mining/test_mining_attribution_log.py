"""Live attribution on a 4-worker log: every feedback and Average-score line goes to the validator it
names or follows; UID-less lines (cooldown, task received, failed pull/submit) only where the log makes
it certain, else listed as unattributed; image tasks paired by their `image:<blake3>` log id; pending
tasks bounded and expired. The fixture's expected story is written out in
tests/mining/fixtures/make_miner_4workers.py."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from console.app import main
from console.mining.attribution import PullTracker
from console.mining.events import AveragesReported, FeedbackReceived, PullRefused, SubmitFailed, TaskReceived
from console.mining.log_follower import PENDING_MAX, PENDING_TTL_S, LogInterpreter, image_log_id
from tests.support.miner_log import miner_log_line

FIXTURES = Path(__file__).parent / "fixtures"
LOG = FIXTURES / "miner_4workers.log"
HOTKEYS = FIXTURES / "validators_4workers.yaml"
IMAGE = (FIXTURES / "image_prompt.b64").read_text().strip()
UTC = timezone.utc
T0 = datetime(2026, 11, 21, 12, 0, 0).timestamp()  # the fixture's timestamps are local time


def line(seconds: float, msg: str, level: str = "DEBUG") -> str:
    ts = datetime.fromtimestamp(1_800_000_000 + seconds, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return miner_log_line(ts, msg, level)


pytestmark = pytest.mark.usefixtures("private_dirs")  # tests/mining/conftest.py


def once_json(capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    assert main(["--miner-log", str(LOG), *extra, "--once", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_once_json_attributes_every_feedback_and_average_line(capsys: pytest.CaptureFixture[str]) -> None:
    data = once_json(capsys, "--validators", str(HOTKEYS))
    v = {x["uid"]: x for x in data["validators"]}
    outcomes = {uid: (x["last_outcome"], x["last_score"]) for uid, x in v.items() if x["last_outcome"]}
    assert outcomes == {
        27: ("accepted", 0.72),
        49: ("zero", 0.0),  # the image task: 0.0 = not accepted (why is not in the log)
        0: ("validation_failed", None),
        200: ("accepted", 0.66),
        181: ("accepted", 0.64),
        133: ("submit_failed", None),
    }
    # each Average-score line is the view of the validator whose feedback it follows
    ratings = {
        uid: (x["reported"]["duel_rating"], x["reported"]["accepted"])
        for uid, x in v.items()
        if x["reported"]
    }
    assert ratings == {27: (1530.2, 12), 49: (1480.0, 3), 0: (1600.0, 20), 200: (1500.0, 1), 181: (1510.0, 5)}
    assert data["counters"]["unattributed_averages"] == 0


def test_once_json_credits_cooldowns_only_when_certain(capsys: pytest.CaptureFixture[str]) -> None:
    data = once_json(capsys, "--validators", str(HOTKEYS))
    v = {x["uid"]: x for x in data["validators"]}
    # 12's cooldown line came while 4 pulls were out; it became certain once 27's and 49's feedback
    # explained two of the answers and 81's hotkey (validators file) the third
    assert v[12]["violations"] == 2 and v[12]["cooldown_until"] == pytest.approx(T0 + 0.35 + 120)
    # 150 vs 181: 181's feedback explains the task line, so the cooldown line is 150's
    assert v[150]["violations"] == 1 and v[150]["cooldown_until"] == pytest.approx(T0 + 50.4 + 200)
    assert v[81]["skip_until"] == pytest.approx(T0 + 0.5 + 300)  # the miner's own 300 s skip
    credited = {uid for uid, x in v.items() if x["violations"]}
    assert credited == {12, 150}  # and nobody else: 27/49/81 pulled at the same moment
    kinds = [u["kind"] for u in data["unattributed"]]
    assert kinds.count("cooldown") == 0 and kinds.count("pull_failed") == 0
    assert sorted(u["detail"] for u in data["unattributed"] if u["kind"] == "task") == [
        "a leather horse saddle",
        "a stone garden lantern",
    ]


def test_without_hotkeys_the_ambiguous_lines_stay_unattributed(capsys: pytest.CaptureFixture[str]) -> None:
    data = once_json(capsys)
    v = {x["uid"]: x for x in data["validators"]}
    # 12 and 81 both pulled in the group whose cooldown and failed-pull lines name no UID: neither
    # is credited with either, and both lines are listed as unattributed
    assert v[12]["violations"] == 0 and v[12]["cooldown_until"] is None and v[12]["skip_until"] is None
    assert v[81]["violations"] == 0 and v[81]["skip_until"] is None
    kinds = [u["kind"] for u in data["unattributed"]]
    assert kinds.count("cooldown") == 1 and kinds.count("pull_failed") == 1
    assert v[150]["violations"] == 1  # still certain: tied by 181's feedback


def test_once_json_lists_failed_submits_and_image_tasks(capsys: pytest.CaptureFixture[str]) -> None:
    data = once_json(capsys, "--validators", str(HOTKEYS))
    fails = data["failed_submits"]
    assert [(f["uid"], f["prompt"]) for f in fails] == [
        (133, "a small brass telescope on a tripod"),  # the only task outstanding: certain
        (None, None),  # two tasks from two validators outstanding: cannot say which
        (None, None),
    ]
    assert data["counters"]["submit_failures"] == 3
    v133 = next(x for x in data["validators"] if x["uid"] == 133)
    assert v133["submit_failures"] == 1 and v133["skip_until"] == pytest.approx(T0 + 42 + 300)
    lost = [r for r in data["recent_scores"] if r["outcome"] == "submit_failed"]
    assert [r["uid"] for r in lost] == [133]
    assert data["image_tasks"] == {"received": 1, "answered": 1}
    (img,) = [r for r in data["recent_scores"] if r["image"]]
    assert img["uid"] == 49 and img["prompt"] == image_log_id(IMAGE)
    assert IMAGE[:100] not in json.dumps(data)  # the base64 itself is never kept
    assert data["counters"]["pending_expired"] == 2  # lantern and saddle: never answered


def test_once_text_names_unattributed_and_failed_submits(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--miner-log", str(LOG), "--validators", str(HOTKEYS), "--once"]) == 0
    out = capsys.readouterr().out
    assert "[ 27]" in out and "rating 1530" in out
    assert "failed submits: 3 (1 attributed)" in out
    assert "unattributed: 4" in out
    assert "image tasks: 1" in out


# -- the rules behind it, line by line ---------------------------------------------------------


def test_average_line_belongs_to_the_feedback_line_right_before_it() -> None:
    it = LogInterpreter(UTC)
    it.feed(line(0, "Feedback received from [27]. Score: 0.7. (a chair)"))
    (avg,) = it.feed(
        line(
            0.001,
            "Average score: 0.8. Current duel rating: 1530.2. Accepted results (last 4h): 12. Reward: 18362.4.",
        )
    )
    assert isinstance(avg, AveragesReported) and avg.uid == 27
    it.feed(line(1, "Querying task from [12]. Stake: 1.0"))
    (avg,) = it.feed(line(1.1, "Average score: 0.8. Accepted results (last 4h): 1. Reward: 0.8."))
    assert avg.uid is None  # follows no feedback line: nobody's


def test_tracker_ties_a_group_and_resolves_the_last_answer() -> None:
    tr: PullTracker[str] = PullTracker()
    tr.query(0, 12)
    tr.query(0.1, 27)
    tr.query(0.2, None)  # the owner's turn
    assert not tr.answer(0.3, "cooldown-A").certain
    assert not tr.answer(0.4, "task-B", key="B").certain
    assert not tr.answer(0.5, "task-C", key="C").certain
    assert tr.tie("B", 27) == []  # 2 pulls (12, owner) and 2 answers left: still open
    # owner's feedback names UID 5: it was not among the pulls, so it was the owner's turn
    assert tr.tie("C", 5) == [("cooldown-A", 12)]
    assert tr.owner_uid == 5


def test_tracker_single_pull_is_certain_and_stale_pulls_expire() -> None:
    tr: PullTracker[str] = PullTracker(pull_ttl_s=60)
    tr.query(0, 12)
    assert tr.answer(1, "x").uid == 12
    tr.query(2, 27)  # never answered (a line we do not read)
    tr.query(100, 49)
    assert tr.answer(100.5, "y").uid == 49  # 27's stale pull no longer makes this ambiguous
    tr.query(200, None)
    v = tr.answer(200.2, "z")
    assert v.owner and v.uid is None


def test_failed_submit_with_one_task_outstanding_is_certain_and_learns_the_hotkey() -> None:
    it = LogInterpreter(UTC)
    it.feed(line(0, "Querying task from [27]. Stake: 1.0"))
    it.feed(line(0.3, "Task received. Prompt: a chair."))
    (ev,) = it.feed(line(30, "Failed to submit results to [5HK27]. Reason: Timeout.", "WARNING"))
    assert isinstance(ev, SubmitFailed) and ev.uid == 27 and ev.prompt == "a chair"
    assert it.hotkeys["5HK27"] == 27 and not it.pending


def test_image_task_feedback_pairs_by_blake3_log_id() -> None:
    it = LogInterpreter(UTC)
    it.feed(line(0, "Querying task from [49]. Stake: 1.0"))
    (task,) = it.feed(line(0.3, f"Task received. Prompt: {IMAGE}."))
    assert isinstance(task, TaskReceived) and task.image and task.uid == 49
    assert task.prompt == task.log_id == image_log_id(IMAGE) and task.log_id.startswith("image:")
    (fb,) = it.feed(line(9, f"Feedback received from [49]. Score: 0.7. ({image_log_id(IMAGE)})"))
    assert isinstance(fb, FeedbackReceived) and fb.image and fb.uid == 49 and not it.pending


def test_pending_tasks_are_bounded_and_expire() -> None:
    it = LogInterpreter(UTC)
    for i in range(PENDING_MAX + 40):
        it.feed(line(i * 0.01, f"Querying task from [{i}]. Stake: 1.0"))
        it.feed(line(i * 0.01 + 0.001, f"Task received. Prompt: prompt {i}."))
    assert len(it.pending) == PENDING_MAX and it.expired == 40
    it.feed(line(PENDING_TTL_S + 10, "No available validators to pull the task.", "INFO"))
    assert not it.pending and it.expired == PENDING_MAX + 40


def test_cooldown_while_two_pulls_out_is_never_credited() -> None:
    it = LogInterpreter(UTC)
    it.feed(line(0, "Querying task from [12]. Stake: 1.0"))
    it.feed(line(0.1, "Querying task from [27]. Stake: 1.0"))
    (a,) = it.feed(line(0.3, "Miner is on cooldown for the next: 50 sec. Total cooldown violations: 1"))
    (b,) = it.feed(line(0.4, "Miner is on cooldown for the next: 70 sec. Total cooldown violations: 4"))
    assert isinstance(a, PullRefused) and a.uid is None and b.uid is None
