"""Where the console keeps its files: XDG config and state directories (no Textual, no torch).

- config: ``$GEN404_CONFIG_DIR`` or ``$XDG_CONFIG_HOME/gen404`` (default ``~/.config/gen404``)
- state:  ``$GEN404_STATE_DIR`` or ``$XDG_STATE_HOME/gen404`` (default ``~/.local/state/gen404``);
  created with mode 0700 because it holds endpoint logs (prompts) and the adoption state file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

CONFIG_FILE_NAME = "console.yaml"
STATE_FILE_NAME = "endpoints.json"


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / fallback


def config_dir() -> Path:
    override = os.environ.get("GEN404_CONFIG_DIR")
    if override:
        return Path(override).expanduser()
    return _xdg("XDG_CONFIG_HOME", ".config") / "gen404"


def config_file() -> Path:
    return config_dir() / CONFIG_FILE_NAME


def state_dir(create: bool = True) -> Path:
    """The state directory; created 0700 (and tightened to 0700 if it already exists and is ours)."""
    override = os.environ.get("GEN404_STATE_DIR")
    path = Path(override).expanduser() if override else _xdg("XDG_STATE_HOME", ".local/state") / "gen404"
    if create:
        # Unusable (a file in the way, read-only, full disk): the console still runs; whatever
        # writes there reports it (Supervisor.problems) instead of the console failing to start.
        with contextlib.suppress(OSError):
            ensure_private_dir(path)
    return path


def ensure_private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        if path.stat().st_uid == os.getuid() and (path.stat().st_mode & 0o077):
            path.chmod(0o700)
    except OSError:
        pass
    return path


def state_file() -> Path:
    return state_dir() / STATE_FILE_NAME


def default_log_dir() -> Path:
    return state_dir() / "logs"
