"""The rehearsal's validator set from YAML: the shipped default and the errors a bad file gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from console.mining.validators import ValidatorsFileError, load_validators


def test_default_set_matches_the_seed_guide() -> None:
    vs = load_validators()
    cooldowns = {v.uid: v.rules.task_cooldown for v in vs.validators}
    assert cooldowns.pop(49) == 120.0
    assert len(cooldowns) >= 4 and set(cooldowns.values()) == {300.0}
    assert vs.owner_uid == 0
    assert all(v.rules.throttle_period == 30 and v.rules.cooldown_penalty == 600 for v in vs.validators)
    assert all(v.rules.quality_threshold == 0.6 for v in vs.validators)


def test_overrides_and_defaults(tmp_path: Path) -> None:
    f = tmp_path / "v.yaml"
    f.write_text(
        "defaults: {task_cooldown: 60}\nvalidators:\n  - {uid: 3}\n  - {uid: 1, throttle_period: 5}\n"
    )
    vs = load_validators(f)
    assert vs.uids() == [1, 3]
    assert vs.by_uid(1).rules.task_cooldown == 60 and vs.by_uid(1).rules.throttle_period == 5
    assert vs.owner_uid is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("validators:\n  - {uid: 1, cooldwn: 5}\n", "validators[0]: unknown key 'cooldwn'"),
        ("validators:\n  - {uid: 1, task_cooldown: fast}\n", "task_cooldown must be a number"),
        ("validators:\n  - {uid: 1}\n  - {uid: 1}\n", "duplicate uid"),
        ("validators: []\n", "no validators"),
        ("nonsense: [\n", "not valid YAML"),
    ],
)
def test_bad_files_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ValidatorsFileError) as err:
        load_validators(f)
    assert message in str(err.value) and str(f) in str(err.value)
