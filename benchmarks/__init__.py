"""gen404 benchmarks: scripts that print figures, run from the repo root as `python -m benchmarks.NAME`."""
