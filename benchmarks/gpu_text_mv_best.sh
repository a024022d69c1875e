#!/usr/bin/env bash
# Device call 2 of 2 (after gpu_open_items.sh on the same warm machine): picks the fastest lever
# set from .cache/levers.json and measures it in full, writing $OUT/best.log and JSON files.
#   1. text_mv (1500 steps) with the winning overrides: 2 runs, stage breakdown, 100-step profile
#   2. text_mv_fast and text_mv_ultra_fast with the winner vs as committed, and the eager fp32
#      baseline of text_mv_fast, in one process (the >= 3x ratio is taken side by side)
# BEST=... overrides the choice (e.g. BEST=+compile=true+channels_last=true).
source benchmarks/gpu_env.sh best
if [ -z "${BEST+x}" ]; then
  BEST=$(python3 - <<'PY'
import json
results = json.load(open(".cache/levers.json"))["results"]
done = [r for r in results if not r["error"] and r["median_s"]]
best = min(done, key=lambda r: r["median_s"])
print(best["label"].removeprefix("text_mv+iters=300"))
PY
  )
fi
echo "== winner: '${BEST}' [t=${SECONDS}s]" | tee -a "$LOG"
timeout 330 python3 -m engine.cli bench --presets "text_mv${BEST}" --runs 2 --random-weights --device cuda \
  --profile "$OUT/prof" --json "$OUT/text_mv_best.json" 2>&1 | tail -25 | tee -a "$LOG"
left=$((580 - SECONDS))
echo "== fast / ultra_fast with the winner vs committed, baseline; ${left}s left [t=${SECONDS}s]" | tee -a "$LOG"
timeout "$left" python3 -m engine.cli bench --runs 3 --no-stages --random-weights --device cuda \
  --presets "text_mv_fast${BEST},text_mv_ultra_fast${BEST},text_mv_fast,text_mv_ultra_fast" \
  --baseline=text_mv_fast --json "$OUT/fast_ultra.json" 2>&1 | tail -25 | tee -a "$LOG"
echo "== done [t=${SECONDS}s]" | tee -a "$LOG"
