"""One-off GPU probes (`python -m benchmarks.probes.NAME`): they reach into engine internals to
attribute a cost, so they may break when those internals change; the suite does not depend on them."""
