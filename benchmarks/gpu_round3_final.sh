#!/usr/bin/env bash
# Device call 3 of issue 9's third round (carry .gscache/), writes $OUT/final.log:
#   1. VAE fwd+bwd at 4 x 256 px: LayoutGroupNorm's per-channel form (the engine's) vs the
#      first (var_mean over a group view), profiled
#   2. if the engine's form is the faster: text_mv as committed, 1500 steps, end to end
#   3. time left: the same probe at text_mv_fast's 128 px against ATen's GroupNorm
source benchmarks/gpu_env.sh final
gsplat_restore
probe() {  # probe SECONDS ARGS...
  local limit=$1; shift
  timeout "$limit" python3 benchmarks/gpu_vae_backward_probe.py "$@" 2>&1 | grep -v "USDT\|profiler_st\|DeviceProperties\|warn" | tee -a "$LOG"
}
echo "== VAE encoder fwd+bwd, 4 x 256 px [t=${SECONDS}s]" | tee -a "$LOG"
probe 170 --variants cl+compile,cl+compile+gnview --rows 12 >/dev/null
ms() { grep "^variant $1 " "$LOG" | head -1 | awk '{print $5}'; }
if python3 -c "import sys; sys.exit(not float('$(ms cl+compile)') < float('$(ms cl+compile+gnview)'))" 2>/dev/null; then
  left=$((440 - SECONDS))
  echo "== text_mv as committed, ${left}s left [t=${SECONDS}s]" | tee -a "$LOG"
  timeout "$left" python3 -m engine.cli bench --runs 2 --no-stages --random-weights --device cuda \
    --presets text_mv --json "$OUT/text_mv.json" 2>&1 | tail -8 | tee -a "$LOG"
else
  echo "== the engine's form is not the faster: text_mv not run" | tee -a "$LOG"
fi
left=$((500 - SECONDS))
echo "== VAE encoder fwd+bwd, 4 x 128 px, ${left}s left [t=${SECONDS}s]" | tee -a "$LOG"
[ "$left" -gt 40 ] && probe "$left" --ref 128 --variants cl+compile,cl+compile+nativegn --no-profile >/dev/null
echo "== done [t=${SECONDS}s]" | tee -a "$LOG"
