"""Log pane: the tail of the selected endpoint's log file (like `pm2 logs NAME`)."""

from __future__ import annotations

import os
from pathlib import Path

from textual.widgets import Log

TAIL_BYTES = 64 * 1024
TAIL_LINES = 400


def read_tail(path: Path, max_bytes: int = TAIL_BYTES, max_lines: int = TAIL_LINES) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return []
    lines = data.decode(errors="replace").splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]  # first line is probably cut
    return lines[-max_lines:]


class LogPane(Log):
    """Re-reads the file only when its size or mtime changed."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(highlight=False, auto_scroll=True, **kwargs)  # type: ignore[arg-type]
        self.path: Path | None = None
        self._seen: tuple[int, float] | None = None
        self.border_title = "log"

    def follow(self, path: Path | None, title: str = "") -> None:
        if path != self.path:
            self.path = path
            self._seen = None
        border_title = f"log: {title}  {path}" if path else "log"
        if border_title != self.border_title:  # setting it repaints, even to the same text
            self.border_title = border_title
        self.poll()

    def poll(self) -> None:
        if self.path is None:
            if self._seen is not None or self.line_count:
                self.clear()
            return
        try:
            st = self.path.stat()
            seen = (st.st_size, st.st_mtime)
        except OSError:
            seen = (-1, 0.0)
        if seen == self._seen:
            return
        # Log only auto-scrolls when already at the end, and clear() leaves the old offset
        # behind; so decide here: follow the end unless the reader scrolled up.
        follow = self._seen is None or self.is_vertical_scroll_end
        self._seen = seen
        self.clear()
        lines = read_tail(self.path)
        self.write_lines(lines or [f"(no output yet in {self.path})"], scroll_end=False)
        if follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
