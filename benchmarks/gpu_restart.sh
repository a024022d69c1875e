#!/usr/bin/env bash
# Issue 16's device command line: endpoint life cycle on one GPU (bench_restart.py), < 8 min.
# First start on a fresh box (empty warm cache, inductor and Triton caches), second start with
# the warm cache, SIGKILL under the console's supervisor, switches text_mv_fast <-> ultra_fast
# under load. gsplat's extension is restored/built first, so its one-off ~95 s build is not
# counted as the endpoint's start. Writes $OUT/bench_restart.json and $OUT/restart.log.
# Usage (repo root, wheels installed, PYTHONPATH set): bash benchmarks/gpu_restart.sh
source benchmarks/gpu_env.sh restart
gsplat_restore
gsplat_build 2>&1 | tail -1 | tee -a "$LOG"
timeout "${RESTART_TIMEOUT:-500}" python3 benchmarks/bench_restart.py --preset text_mv_fast \
  --alt text_mv_ultra_fast --device cuda --out "$OUT" --deadline 470 2>&1 | tee -a "$LOG"
echo "bench_restart exit: $?" | tee -a "$LOG"
tail -40 "$OUT/bench_restart_serve.log" > "$OUT/serve_tail.log" 2>/dev/null
