#!/usr/bin/env bash
# Issue 16's acceptance in one device call: benchmarks/bench_restart.py on a fresh GPU box.
# First start (the bridge: block packages, then the whole-model swap), N plain `gen404 serve`
# second starts, a SIGKILL under the console, and (optional) the switches; peak GPU and host
# memory sampled throughout. Writes $OUT/restart.log, $OUT/rs/ (JSON, table, serve log).
# ~5-8 min on an H200 (starts,sigkill with 3 second starts: 170-310 s in session 14).
# Usage (repo root, wheels installed, PYTHONPATH set):
#   bash benchmarks/gpu_restart.sh [PARTS] [SECOND_STARTS] [DEADLINE_S]
# BENCH_EXTRA adds bench_restart arguments (`--cpu-smoke` checks this script on a CPU box).
PARTS=${1:-starts,sigkill}
SECONDS_STARTS=${2:-3}
DEADLINE=${3:-480}
source benchmarks/gpu_env.sh restart
mkdir -p "$OUT/rs"
gsplat_restore
gsplat_build 2>&1 | tail -1 | tee -a "$LOG"
python3 -c "import sys, torch; print('torch', torch.__version__, 'python', sys.version.split()[0],
      'PYTHONDONTWRITEBYTECODE', sys.flags.dont_write_bytecode)" | tee -a "$LOG"
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$OUT/gpu_mem.csv" &
SAMPLERS=$!
(while true; do free -m | awk '/Mem:/{print $3}' >> "$OUT/host_mem.csv"; sleep 1; done) &
SAMPLERS="$SAMPLERS $!"
trap 'kill $SAMPLERS 2>/dev/null' EXIT
started=$SECONDS
timeout $((DEADLINE + 30)) python3 -m benchmarks.bench_restart --device cuda --parts "$PARTS" \
  --second-starts "$SECONDS_STARTS" --deadline "$DEADLINE" --out "$OUT/rs" ${BENCH_EXTRA:-} \
  > "$OUT/rs/restart.txt" 2>&1
echo "bench_restart rc=$? in $((SECONDS - started)) s" | tee -a "$LOG"
# the last table the benchmark printed (it reprints it after each part)
awk '/^machine:/{table=""} {table=table $0 "\n"} END{printf "%s", table}' "$OUT/rs/restart.txt" \
  | grep -v "Warning\|warn" | cut -c1-1500 | tee -a "$LOG"
grep -h "bytecode cache\|ready on\|failed" "$OUT/rs/bench_restart_serve.log" 2>/dev/null | cut -c1-240 | tail -12 | tee -a "$LOG"
peak() { sort -n "$1" 2>/dev/null | tail -1; }
echo "peak memory used: GPU $(peak "$OUT/gpu_mem.csv") MiB (nvidia-smi), host $(peak "$OUT/host_mem.csv") MiB" | tee -a "$LOG"
