#!/usr/bin/env bash
# The one device command line for issue 9: graphed-vs-eager check, then `gen404 bench` on the
# GPU presets (full-size MVDream, random weights), optimised vs the eager fp32 baseline on
# text_mv_fast, torch.profiler tables. Writes under $OUT: bench.json, bench.log, prof/*.txt and
# gsplat's compiled extension (torch_ext.tar) so a later call can skip its ~90 s build.
# Usage (repo root, wheels installed, PYTHONPATH set): bash benchmarks/gpu_bench.sh [PRESETS] [RUNS]
set -u -o pipefail
OUT=${OUT:-/tmp/gen404-bench}
PRESETS=${1:-text_mv_fast,text_mv_fast+channels_last=true,text_mv_ultra_fast,text_mv}
RUNS=${2:-2}
mkdir -p "$OUT/prof"
export PYTHONUNBUFFERED=1
export TORCH_EXTENSIONS_DIR=/tmp/torch_ext
if [ -f .gscache/torch_ext.tar ]; then
  mkdir -p "$TORCH_EXTENSIONS_DIR" && tar -xf .gscache/torch_ext.tar -C "$TORCH_EXTENSIONS_DIR"
fi
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/bench.log"
python3 -m pytest -q -p no:cacheprovider tests/test_bench.py -k graphed 2>&1 | tail -3 | tee -a "$OUT/bench.log"
timeout "${BENCH_TIMEOUT:-480}" python3 -m engine.cli bench --presets "$PRESETS" --runs "$RUNS" \
  --baseline=text_mv_fast --random-weights --device cuda --profile "$OUT/prof" --json "$OUT/bench.json" \
  2>&1 | grep -v "USDT\|profiler_st" | tee -a "$OUT/bench.log"
echo "bench exit: $?" | tee -a "$OUT/bench.log"
tar -cf "$OUT/torch_ext.tar" -C "$TORCH_EXTENSIONS_DIR" . 2>/dev/null && ls -la "$OUT/torch_ext.tar"
