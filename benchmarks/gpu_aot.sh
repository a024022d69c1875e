#!/usr/bin/env bash
# Issue 16's AOT probe on one GPU: the start-up probe (benchmarks/probes/startup.py) with
# compile_backend "aot" cold (builds the AOTInductor packages) and warm (loads them), then the
# uncompiled and torch.compile starts for a side-by-side generation time, as fresh processes.
# Writes $OUT/aot.log, $OUT/startup_*.json and each run's full output in $OUT/startup_*.txt.
# Usage (repo root, wheels installed, PYTHONPATH set): bash benchmarks/gpu_aot.sh [PRESET] [BUDGET_S]
PRESET=${1:-text_mv_fast}
BUDGET=${2:-540}
source benchmarks/gpu_env.sh aot
gsplat_restore
gsplat_build 2>&1 | tail -1 | tee -a "$LOG"
export GEN404_WARM_CACHE_DIR=$PWD/.cache/warm
PROBE=(python3 -m benchmarks.probes.startup --preset "$PRESET" --random-weights)
run() {  # NAME LIMIT_S probe-arguments...; the limit shrinks to what the budget has left
  local name=$1 limit=$2; shift 2
  (( limit > BUDGET - SECONDS )) && limit=$(( BUDGET - SECONDS ))
  if (( limit < 20 )); then echo "== $name skipped (budget) [t=${SECONDS}s]" | tee -a "$LOG"; return; fi
  echo "== $name [t=${SECONDS}s]" | tee -a "$LOG"
  timeout "$limit" "${PROBE[@]}" "$@" --json "$OUT/startup_$name.json" 2>&1 \
    | tee "$OUT/startup_$name.txt" | grep -v "^pass\.\|Warning\|warn(\|warn_once\|originates from\|is_torch_version\|^$" | tail -60 | tee -a "$LOG"
}
run aot_cold 330 --compile aot
run aot_warm 75 --compile aot
run off 60 --compile off
run jit_cold 200 --compile on
echo "aot probe done [t=${SECONDS}s]" | tee -a "$LOG"
