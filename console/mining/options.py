"""The mining column's command-line choices: `MiningOptions`, its argparse flags and their parsing.

Kept apart from the controller so console/config.py builds its parser without importing the
running mining machinery (the controller, the miner loop, the live follower).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from console.mining.scorers import DEFAULT_VALIDATOR_URL


@dataclass
class MiningOptions:
    miner_log: Path | None = None
    rehearsal: bool = True
    validators_file: Path | None = None
    prompts_file: Path | None = None
    time_scale: float = 1.0
    validator_url: str | None = DEFAULT_VALIDATOR_URL

    @property
    def mode(self) -> str:
        if self.miner_log is not None:
            return "live"
        return "rehearsal" if self.rehearsal else "off"


def add_mining_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("mining (validators, cooldowns, scores)")
    g.add_argument(
        "--miner-log", type=Path, metavar="PATH", help="live mode: follow the real miner's pm2 log file"
    )
    g.add_argument(
        "--rehearsal",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="without a miner log, rehearse the mining loop against simulated validators (default on)",
    )
    g.add_argument("--validators", type=Path, metavar="FILE", help="simulated validators (YAML)")
    g.add_argument("--prompts", type=Path, metavar="FILE", help="rehearsal prompts, one a line")
    g.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        metavar="X",
        help="rehearsal clock runs X times faster (demos)",
    )
    g.add_argument(
        "--validator-url",
        default=DEFAULT_VALIDATOR_URL,
        metavar="URL",
        help="local validation service for rehearsal scores (else a gate-only stand-in)",
    )


def mining_options(args: argparse.Namespace) -> MiningOptions:
    scale = float(getattr(args, "time_scale", 1.0) or 1.0)
    if scale <= 0:
        raise ValueError(f"--time-scale must be positive, got {scale}")
    return MiningOptions(
        miner_log=getattr(args, "miner_log", None),
        rehearsal=bool(getattr(args, "rehearsal", True)),
        validators_file=getattr(args, "validators", None),
        prompts_file=getattr(args, "prompts", None),
        time_scale=scale,
        validator_url=getattr(args, "validator_url", DEFAULT_VALIDATOR_URL),
    )
