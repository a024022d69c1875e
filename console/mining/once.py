"""`gen404-console --miner-log PATH --once [--json]`: the state read from the miner's log, printed once."""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

from console.mining.live import state_from_log
from console.mining.options import MiningOptions
from console.mining.validators import ValidatorsFileError, load_validators


def run_once_mining(options: MiningOptions, as_json: bool = True, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    assert options.miner_log is not None
    if not options.miner_log.is_file():
        print(f"gen404-console: error: --miner-log {options.miner_log}: no such file", file=sys.stderr)
        return 2
    try:
        validators = load_validators(options.validators_file)
    except ValidatorsFileError as exc:
        print(f"gen404-console: error: {exc}", file=sys.stderr)
        return 2
    state = state_from_log(options.miner_log, validators)
    now = time.time()
    data = state.snapshot(now)
    data["log"] = {"path": str(options.miner_log), "last_event_t": state.last_event_t or None}
    if as_json:
        json.dump(data, out, indent=2)
        out.write("\n")
        return 0
    led = data["ledger"]
    out.write(f"miner log {options.miner_log}: {data['counters']['events']} events\n")
    for v in data["validators"]:
        score = "-" if v["last_score"] is None else f"{v['last_score']:.2f}"
        rep = v["reported"]
        seen = ""
        if rep is not None:  # that validator's own view, from the Average-score line after its feedback
            rating = "" if rep["duel_rating"] is None else f" rating {rep['duel_rating']:.0f}"
            seen = f"  its view: avg {rep['average_score']:.2f}{rating} accepted {rep['accepted']}"
        out.write(
            f"  [{v['uid']:>3}] {v['state']:<9} {v['cooldown_left_s']:>6.0f}s left  last {score:<5} "
            f"violations {v['violations']}  tasks {v['tasks_done']}{seen}\n"
        )
    mean = "-" if led["mean_score"] is None else f"{led['mean_score']:.2f}"
    out.write(f"  accepted (4h) {led['accepted']} of {led['results']}, mean score {mean}\n")
    fails = data["failed_submits"]
    attributed = sum(1 for f in fails if f["uid"] is not None)
    out.write(f"  failed submits: {len(fails)} ({attributed} attributed)\n")
    for f in fails:
        who = f"[{f['uid']}]" if f["uid"] is not None else "unattributed"
        out.write(f"    {who} hotkey {f['hotkey']}: {f['reason']}  {f['prompt'] or ''}\n")
    img = data["image_tasks"]
    out.write(f"  image tasks: {img['received']} received, {img['answered']} answered\n")
    out.write(f"  unattributed: {len(data['unattributed'])} (lines the log does not tie to one validator)\n")
    for u in data["unattributed"]:
        out.write(f"    {u['kind']}: {u['detail']}\n")
    return 0
