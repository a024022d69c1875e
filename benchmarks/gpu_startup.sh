#!/usr/bin/env bash
# Issue 16's probe on one GPU: where a start's seconds go (benchmarks/probes/startup.py), run as
# fresh processes. Writes $OUT/startup.log and $OUT/startup_*.json. ~4-5 min on an H200.
#   cold       empty inductor cache, compiles, saves the mega-cache (TORCH_CACHING_PRECOMPILE=1,
#              so the file also holds dynamo's precompile entries where this torch writes them)
#   warm_pre   inductor cache emptied again, the mega-cache loaded, TORCH_CACHING_PRECOMPILE=1
#   warm       the same without precompile (what `gen404 serve` does today)
#   eager      compile off: weights, CUDA-graph capture and warm-up only
# Usage (repo root, wheels installed, PYTHONPATH set): bash benchmarks/gpu_startup.sh [PRESET]
PRESET=${1:-text_mv_fast}
source benchmarks/gpu_env.sh startup
gsplat_restore
gsplat_build 2>&1 | tail -1 | tee -a "$LOG"
MC=/tmp/gen404-startup.megacache
PROBE=(python3 -m benchmarks.probes.startup --preset "$PRESET" --random-weights --compile-times)
fresh_inductor() { rm -rf "$TORCHINDUCTOR_CACHE_DIR" /tmp/torchinductor_* ~/.triton/cache; }
run() {  # NAME, then env assignments and probe arguments
  local name=$1; shift
  echo "== $name [t=${SECONDS}s]" | tee -a "$LOG"
  env "$@" --json "$OUT/startup_$name.json" 2>&1 | grep -v "^pass\." | tail -60 | tee -a "$LOG"
}
fresh_inductor
run cold TORCH_CACHING_PRECOMPILE=1 timeout 300 "${PROBE[@]}" --save "$MC"
fresh_inductor
run warm_pre TORCH_CACHING_PRECOMPILE=1 timeout 150 "${PROBE[@]}" --load "$MC"
fresh_inductor
run warm TORCH_CACHING_PRECOMPILE=0 timeout 150 "${PROBE[@]}" --load "$MC"
run eager TORCH_CACHING_PRECOMPILE=0 timeout 100 "${PROBE[@]}" --compile off
echo "startup probe done [t=${SECONDS}s]" | tee -a "$LOG"
