#!/usr/bin/env bash
# Device call for issue 9's third round (text_mv's VAE encoder backward), writes under $OUT:
#   1. gsplat's build in the background (and $OUT/torch_ext.tar.zst for a later fresh machine)
#   2. benchmarks/gpu_vae_backward_probe.py: VAE fwd+bwd variants side by side at text_mv's shape,
#      the first variant profiled graphed and ungraphed (traces as .json.gz)
#   3. text_mv at 300 steps end to end: the committed preset beside the VARIANTS overrides
# Usage: PROBE=cl+compile,contig+compile VARIANTS=+channels_last=false bash benchmarks/gpu_round3.sh
source benchmarks/gpu_env.sh round3
PROBE=${PROBE:-cl+compile,contig+compile,contig+compile+nolayout,cl+compile+cdt}
VARIANTS=${VARIANTS:-+channels_last=false}
gsplat_restore
(gsplat_build >"$OUT/gsplat_build.log" 2>&1; gsplat_save >>"$OUT/gsplat_build.log" 2>&1) &
echo "== VAE encoder fwd+bwd variants, 4 x 256 px [t=${SECONDS}s]" | tee -a "$LOG"
timeout "${PROBE_TIMEOUT:-320}" python3 benchmarks/gpu_vae_backward_probe.py --variants "$PROBE" \
  --trace-dir "$OUT/trace" 2>&1 | grep -v "USDT\|profiler_st\|DeviceProperties" | tee -a "$LOG"
for f in "$OUT"/trace/*.json; do [ -f "$f" ] && gzip -f "$f"; done
wait
tail -2 "$OUT/gsplat_build.log" | tee -a "$LOG"
left=$((585 - SECONDS))
base="text_mv+iters=300"
specs=$base
for v in ${VARIANTS//,/ }; do specs="$specs,$base$v"; done
echo "== $specs, ${left}s left [t=${SECONDS}s]" | tee -a "$LOG"
timeout "$left" python3 -m engine.cli bench --runs 2 --no-stages --random-weights --device cuda \
  --presets "$specs" --json "$OUT/round3_e2e.json" 2>&1 | tail -12 | tee -a "$LOG"
echo "== done [t=${SECONDS}s]" | tee -a "$LOG"
