"""The supervisor's state file: endpoints left running, so a later console re-adopts them.

One JSON object `{"version": 1, "endpoints": [...]}`, each item the port, preset, gpu, pid, the
process start time (clock ticks from /proc/<pid>/stat) and the log path. Written atomically
(temp file + rename) with mode 0600; a missing or unreadable file reads as no endpoints.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from console.supervisor.model import ManagedEndpoint

STATE_VERSION = 1


def state_items(endpoints: Iterable[ManagedEndpoint]) -> list[dict[str, Any]]:
    """The records worth adopting: endpoints we spawned whose process still runs."""
    items = []
    for ep in endpoints:
        if ep.external or ep.process is None or ep.process.poll() is not None:
            continue
        items.append(
            {
                "port": ep.port,
                "preset": ep.spec.preset,
                "gpu": ep.spec.gpu,
                "pid": ep.process.pid,
                "start_ticks": ep.process.start_ticks,
                "log_path": str(ep.log_path),
                "restarts": ep.restarts,
            }
        )
    return items


def write_state(path: Path, items: list[dict[str, Any]]) -> None:
    """Replace the state file atomically; raises OSError (full disk, read-only dir)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"version": STATE_VERSION, "endpoints": items}, fh, indent=1)
    tmp.replace(path)


def read_state(path: Path | None) -> list[dict[str, Any]]:
    if path is None or not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    items = data.get("endpoints") if isinstance(data, dict) else None
    return [i for i in items or [] if isinstance(i, dict) and "port" in i and "pid" in i]
