#!/usr/bin/env bash
# The device command line for issue 18: one full-size local validation (16 views at 518 px through
# gsplat, convnext_large_d CLIP, DINOv2-small quality, LPIPS AlexNet, SSIM; seeded random weights,
# nothing downloaded), per stage, on hamburger.ply, robocop.spz and synthetic 50k / 250k results.
# Writes $OUT/gpu_scoring_full.json and $OUT/scoring.log (+ gsplat's build as torch_ext.tar.zst).
# Usage (repo root, wheels installed, PYTHONPATH set): bash benchmarks/gpu_scoring.sh [REPEATS]
source benchmarks/gpu_env.sh scoring
gsplat_restore
gsplat_build 2>&1 | tail -1 | tee -a "$LOG"
timeout "${SCORING_TIMEOUT:-240}" python3 -m benchmarks.gpu_scoring_full --repeats "${1:-10}" \
  >/dev/null 2> >(tee -a "$LOG" >&2)
echo "gpu_scoring_full exit: $?" | tee -a "$LOG"
gsplat_save
