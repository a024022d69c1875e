"""`gen404-console --miner-log PATH --once --json`: the state read from the log, for scripts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from console.app import main

FIXTURE = Path(__file__).parent / "fixtures" / "miner.log"


pytestmark = pytest.mark.usefixtures("private_dirs")  # tests/mining/conftest.py


def test_once_json_prints_validators_scores_and_ledger(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--miner-log", str(FIXTURE), "--once", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["mode"] == "live"
    by_uid = {v["uid"]: v for v in data["validators"]}
    assert set(by_uid) == {0, 12, 27, 49, 81, 133}
    assert by_uid[12]["last_score"] == 0.71 and by_uid[12]["last_outcome"] == "accepted"
    assert by_uid[27]["last_outcome"] == "zero"  # 0.0: not accepted, reason unknown
    assert by_uid[49]["violations"] == 3 and by_uid[49]["task_cooldown_s"] == 120.0
    scores = [(r["uid"], r["score"]) for r in data["recent_scores"]]
    assert (12, 0.71) in scores and (81, 0.65) in scores
    assert data["reported"]["duel_rating"] == 1512.3 and data["reported"]["accepted"] == 17
    assert set(data["ledger"]) >= {"accepted", "mean_score", "acceptance_rate", "missed_windows", "window_h"}
    assert data["log"]["path"] == str(FIXTURE)


def test_once_text_and_missing_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--miner-log", str(FIXTURE), "--once"]) == 0
    out = capsys.readouterr().out
    assert "[ 49]" in out and "violations 3" in out
    assert main(["--miner-log", str(tmp_path / "nope.log"), "--once", "--json"]) == 2
    assert "no such file" in capsys.readouterr().err
