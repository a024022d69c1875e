"""The vectors in tests/vectors are the files their README names: each hash in its table matches."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

ROW = re.compile(r"^\| (?P<name>[\w.]+) \|.*\| `(?P<sha>[0-9a-f]{64})` \|$")


def manifest(vectors_dir: Path) -> dict[str, str]:
    rows = (ROW.match(line) for line in (vectors_dir / "README.md").read_text().splitlines())
    return {m["name"]: m["sha"] for m in rows if m}


def test_every_vector_is_listed_with_its_hash(vectors_dir: Path) -> None:
    listed = manifest(vectors_dir)
    on_disk = {p.name for p in vectors_dir.iterdir() if p.name != "README.md"}
    assert set(listed) == on_disk
    for name, sha in listed.items():
        assert hashlib.sha256((vectors_dir / name).read_bytes()).hexdigest() == sha, name


def test_prompts_are_real_task_prompts(prompts_file: Path) -> None:
    prompts = [p for p in prompts_file.read_text().splitlines() if p.strip()]
    assert len(prompts) == 946
    assert all(len(p) <= 1024 for p in prompts)
