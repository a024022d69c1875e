"""The rehearsal's validator set, read from YAML (see console/data/validators.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from console.mining.rules import ValidatorRules

DEFAULT_VALIDATORS_FILE = Path(__file__).resolve().parents[1] / "data" / "validators.yaml"
MIN_STAKE = 1000.0

_RULE_KEYS = {f.name for f in fields(ValidatorRules)}
_SPEC_KEYS = {"uid", "name", "stake", "serving", "owner", "hotkey"}


class ValidatorsFileError(ValueError):
    """A validators file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class ValidatorSpec:
    uid: int
    name: str
    stake: float
    serving: bool
    owner: bool
    rules: ValidatorRules
    hotkey: str | None = None  # live logs name validators by hotkey in failed pull/submit lines


@dataclass(frozen=True)
class ValidatorSet:
    validators: tuple[ValidatorSpec, ...]
    min_stake: float = MIN_STAKE

    @property
    def owner_uid(self) -> int | None:
        owners = [v.uid for v in self.validators if v.owner]
        return owners[0] if owners else None

    def by_uid(self, uid: int) -> ValidatorSpec:
        for v in self.validators:
            if v.uid == uid:
                return v
        raise KeyError(uid)

    def uids(self) -> list[int]:
        return [v.uid for v in self.validators]


def _rules(data: dict[str, Any], base: ValidatorRules, where: str) -> ValidatorRules:
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _RULE_KEYS:
            raise ValidatorsFileError(f"{where}: unknown key {key!r}")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValidatorsFileError(f"{where}: {key} must be a number, got {value!r}")
        values[key] = type(getattr(base, key))(value)
    return replace(base, **values)


def parse_validators(data: Any, source: str = "<validators>") -> ValidatorSet:
    if not isinstance(data, dict) or not isinstance(data.get("validators"), list):
        raise ValidatorsFileError(f"{source}: expected a mapping with a 'validators' list")
    unknown = set(data) - {"defaults", "validators", "min_stake"}
    if unknown:
        raise ValidatorsFileError(f"{source}: unknown key {sorted(unknown)[0]!r}")
    defaults = _rules(data.get("defaults") or {}, ValidatorRules(), f"{source}: defaults")
    specs: list[ValidatorSpec] = []
    for i, item in enumerate(data["validators"]):
        where = f"{source}: validators[{i}]"
        if not isinstance(item, dict) or "uid" not in item:
            raise ValidatorsFileError(f"{where}: expected a mapping with 'uid'")
        rule_part = {k: v for k, v in item.items() if k not in _SPEC_KEYS}
        uid = int(item["uid"])
        specs.append(
            ValidatorSpec(
                uid=uid,
                name=str(item.get("name", f"validator {uid}")),
                stake=float(item.get("stake", 10_000.0)),
                serving=bool(item.get("serving", True)),
                owner=bool(item.get("owner", False)),
                rules=_rules(rule_part, defaults, where),
                hotkey=str(item["hotkey"]) if item.get("hotkey") else None,
            )
        )
    seen = [s.uid for s in specs]
    if len(set(seen)) != len(seen):
        raise ValidatorsFileError(f"{source}: duplicate uid")
    if not specs:
        raise ValidatorsFileError(f"{source}: no validators")
    return ValidatorSet(tuple(sorted(specs, key=lambda s: s.uid)), float(data.get("min_stake", MIN_STAKE)))


def load_validators(path: Path | str | None = None) -> ValidatorSet:
    p = Path(path) if path is not None else DEFAULT_VALIDATORS_FILE
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValidatorsFileError(f"{p}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ValidatorsFileError(f"{p}: not valid YAML ({exc})") from exc
    return parse_validators(data, str(p))
