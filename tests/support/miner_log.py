"""Lines as the 404-GEN miner's loguru log writes them (pm2's miner-out.log), for the log tests.

One place for the format the live reader (console.mining.log_follower) parses: a blue timestamp,
the level centred in 16 columns, then the message.
"""

from __future__ import annotations

import time


def miner_log_line(stamp: str, msg: str, level: str = "DEBUG") -> str:
    """`stamp` is "YYYY-MM-DD HH:MM:SS.mmm" (or without the milliseconds), as loguru prints it."""
    return f"\x1b[34m{stamp}\x1b[39m | \x1b[1m\x1b[34m{level:^16}\x1b[0m | {msg}\n"


def stamp_now() -> str:
    """This moment's local time in the miner's timestamp format (for logs a test follows live)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime()) + ".000"
