#!/usr/bin/env bash
# Quick start: `./gen404.sh console` runs the console, `./gen404.sh test` runs the tests.
# Both first make sure .venv holds the project and its dependencies (idempotent, fast when done).
set -euo pipefail
cd "$(dirname "$0")"

VENV=${GEN404_VENV:-.venv}
PY=${PYTHON:-python3}
# A matched torch/torchvision pair (open_clip needs torchvision, and a torchvision must match its
# torch build exactly). A box that already has a working torch keeps it.
TORCH_SPEC=${GEN404_TORCH:-torch==2.14.1 torchvision==0.29.1}

ensure_env() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "gen404: creating $VENV" >&2
        "$PY" -m venv "$VENV"
    fi
    local stamp="$VENV/.gen404-installed"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        echo "gen404: installing dependencies into $VENV (first run only)" >&2
        "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
        # shellcheck disable=SC2086  # TORCH_SPEC is a list of requirement specifiers
        "$VENV/bin/python" -c 'import torch, torchvision' 2>/dev/null || "$VENV/bin/python" -m pip install -q $TORCH_SPEC
        local extras=test
        command -v nvidia-smi >/dev/null 2>&1 && extras=test,gpu  # gsplat: the CUDA rasterizer
        "$VENV/bin/python" -m pip install -q -e ".[$extras]"
        touch "$stamp"
    fi
}

cmd=${1:-help}
shift || true
case "$cmd" in
    console)
        ensure_env
        exec "$VENV/bin/gen404-console" "$@"
        ;;
    test)
        ensure_env
        # Test files in parallel worker processes (pytest-xdist): most of the suite waits on real
        # endpoints and subprocesses, so 2 workers halve it on a 2-core box. At most 4 by default
        # (each worker imports torch and starts endpoints); `GEN404_TEST_WORKERS=0` runs serially.
        cores=$(nproc 2>/dev/null || echo 2)
        workers=${GEN404_TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}
        exec "$VENV/bin/python" -m pytest -q -n "$workers" "$@"
        ;;
    lint)
        # Style (ruff), the layers (import-linter contracts in pyproject.toml) and the types (mypy),
        # as CI runs them.
        ensure_env
        "$VENV/bin/ruff" check .
        "$VENV/bin/ruff" format --check .
        "$VENV/bin/lint-imports"
        exec "$VENV/bin/mypy"
        ;;
    gen404)
        ensure_env
        exec "$VENV/bin/gen404" "$@"
        ;;
    *)
        echo "usage: ./gen404.sh console [ARGS] | test [PYTEST ARGS] | lint | gen404 [ARGS]" >&2
        exit 2
        ;;
esac
