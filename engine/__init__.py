"""gen404 engine: prompt -> 3D Gaussians by score distillation.

Importing this package must stay cheap and torch-free: the console imports torch-free
modules from here (presets, splats, gate, formats) and must never pull torch in.
"""

import os

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. Endpoints share CPU
# cores (several per box, plus the miner); with spinning threads a tiny CPU generation on a busy
# 2-core box took 1-8 s instead of 0.1 s. Every torch user in gen404 imports this package first;
# an explicit setting in the environment still wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
