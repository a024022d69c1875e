#!/usr/bin/env bash
# Issue 15's device command: the concurrency benchmark on one GPU (full-size MVDream, random
# weights, all setups uncompiled: see bench_concurrency.py), then optionally text_mv.
# Writes under $OUT: concurrency.log, concurrency_text_mv_fast.json (+ _text_mv.json), logs/*.log.
# Usage (repo root, wheels installed, PYTHONPATH set): bash benchmarks/gpu_concurrency.sh [text_mv]
#   text_mv_fast: 1, 2, 4, 8 simultaneous x serial / batched / 4 procs, and the batched-step
#   profile for 1, 4, 8 jobs: ~5-6 min with gsplat's build cached (.gscache), +~95 s without.
#   With the argument "text_mv" it runs only text_mv, 4 simultaneous, batched (~4-5 min).
source benchmarks/gpu_env.sh concurrency
mkdir -p "$OUT/logs"
gsplat_restore
gsplat_build 2>&1 | tail -1 | tee -a "$LOG"
if [ "${1:-}" = "text_mv" ]; then
  timeout 560 python3 benchmarks/bench_concurrency.py --preset text_mv --counts 4 --setups batched \
    --profile "" --logs "$OUT/logs" --json "$OUT/concurrency_text_mv.json" 2>&1 | tee -a "$LOG"
else
  timeout 540 python3 benchmarks/bench_concurrency.py --preset text_mv_fast --counts 1,2,4,8 \
    --logs "$OUT/logs" --json "$OUT/concurrency_text_mv_fast.json" 2>&1 | tee -a "$LOG"
fi
echo "concurrency exit: $? [t=${SECONDS}s]" | tee -a "$LOG"
