#!/usr/bin/env bash
# The one device command line for issue 9: graphed-vs-eager check, then `gen404 bench` on the
# GPU presets (full-size MVDream, random weights), optimised vs the eager fp32 baseline on
# the first preset (text_mv_fast), torch.profiler tables. Writes under $OUT: bench.json, bench.log, prof/*.txt and
# gsplat's compiled extension (torch_ext.tar.zst, ~33 MB as a plain tar: over the 16 MiB a returned
# file may have) so a later call that carries it as .gscache/ skips the ~65 s build.
# Usage (repo root, wheels installed, PYTHONPATH set): bash benchmarks/gpu_bench.sh [PRESETS] [RUNS]
set -u -o pipefail
OUT=${OUT:-/tmp/gen404-bench}
PRESETS=${1:-text_mv_fast,text_mv_ultra_fast,text_mv}
RUNS=${2:-2}
BASELINE=${BASELINE:-${PRESETS%%,*}}  # the eager fp32 baseline: the first entry unless told
mkdir -p "$OUT/prof"
export PYTHONUNBUFFERED=1
export TORCH_EXTENSIONS_DIR=/tmp/torch_ext
zst() {  # zstd through the python wheel (no zstd binary assumed): zst c|d SRC DST
  python3 -c "import sys, zstandard as z; f = z.ZstdCompressor(level=9).compress if sys.argv[1] == 'c' \
else z.ZstdDecompressor().decompressobj().decompress; open(sys.argv[3], 'wb').write(f(open(sys.argv[2], 'rb').read()))" "$@"
}
if [ -f .gscache/torch_ext.tar.zst ]; then
  mkdir -p "$TORCH_EXTENSIONS_DIR" && zst d .gscache/torch_ext.tar.zst /tmp/torch_ext.tar \
    && tar -xf /tmp/torch_ext.tar -C "$TORCH_EXTENSIONS_DIR"
fi
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/bench.log"
python3 -m pytest -q -p no:cacheprovider tests/test_bench.py -k graphed 2>&1 | tail -3 | tee -a "$OUT/bench.log"
timeout "${BENCH_TIMEOUT:-480}" python3 -m engine.cli bench --presets "$PRESETS" --runs "$RUNS" \
  --baseline="$BASELINE" --random-weights --device cuda --profile "$OUT/prof" --json "$OUT/bench.json" \
  2>&1 | grep -v "USDT\|profiler_st" | tee -a "$OUT/bench.log"
echo "bench exit: $?" | tee -a "$OUT/bench.log"
tar -cf /tmp/torch_ext.tar -C "$TORCH_EXTENSIONS_DIR" . 2>/dev/null \
  && zst c /tmp/torch_ext.tar "$OUT/torch_ext.tar.zst" && ls -la "$OUT/torch_ext.tar.zst"
