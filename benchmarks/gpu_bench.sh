#!/usr/bin/env bash
# The one device script kept (issue 9 onwards): graphed-vs-eager check, then `gen404 bench` on the
# GPU presets (full-size MVDream, random weights), optimised vs the eager fp32 baseline on
# the first preset (text_mv_fast), torch.profiler tables. Writes under $OUT: bench.json, bench.log, prof/*.txt and
# gsplat's compiled extension (torch_ext.tar.zst, ~33 MB as a plain tar: over the 16 MiB a returned
# file may have) so a later call that carries it as .gscache/ skips the build (benchmarks/gpu_env.sh).
# Usage (repo root, wheels installed, PYTHONPATH set): bash benchmarks/gpu_bench.sh [PRESETS] [RUNS]
PRESETS=${1:-text_mv_fast,text_mv_ultra_fast,text_mv}
RUNS=${2:-2}
BASELINE=${BASELINE:-${PRESETS%%,*}}  # the eager fp32 baseline: the first entry unless told
source benchmarks/gpu_env.sh bench
mkdir -p "$OUT/prof"
gsplat_restore
python3 -m pytest -q -p no:cacheprovider tests/test_guidance.py -k graphed 2>&1 | tail -3 | tee -a "$LOG"
timeout "${BENCH_TIMEOUT:-480}" python3 -m engine.cli bench --presets "$PRESETS" --runs "$RUNS" \
  --baseline="$BASELINE" --random-weights --device cuda --profile "$OUT/prof" --json "$OUT/bench.json" \
  2>&1 | grep -v "USDT\|profiler_st" | tee -a "$LOG"
echo "bench exit: $?" | tee -a "$LOG"
gsplat_save
