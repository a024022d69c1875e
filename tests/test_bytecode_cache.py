"""engine/bytecode_cache.py: the libraries' bytecode kept under the warm cache when Python would
compile them at every start. A small package without bytecode stands in for torch; the starts
are real Python processes with PYTHONDONTWRITEBYTECODE=1, as on the H200 box."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import bytecode_cache
from engine.bytecode_cache import ACTIVE, COMPLETE, EMPTY, NOT_NEEDED, OFF


def _library(root: Path) -> Path:
    """`fakelib` (a package and a submodule) under root/site, with no bytecode anywhere."""
    package = root / "site" / "fakelib"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("NAME = 'fakelib'\n")
    (package / "sub.py").write_text("VALUE = 1\n")
    return package


def _env(root: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(root / "site"), PYTHONDONTWRITEBYTECODE="1")
    env["GEN404_STATE_DIR"] = str(root / "state")
    env.pop("GEN404_WARM_CACHE_DIR", None)
    env.pop("PYTHONPYCACHEPREFIX", None)
    env.pop(bytecode_cache.ENV, None)
    env.update(extra)
    return env


# one start: activate for fakelib, import it, say what was found and where the bytecode came
# from; with "fill", fill the tree as an endpoint does once ready, and wait for it
START = """
import json, sys
from engine import bytecode_cache as b
found = b.activate("fakelib")
import fakelib.sub
process = b.fill_later() if sys.argv[1:] == ["fill"] else None
if process is not None:
    process.wait(60)
print(json.dumps({"found": found, "value": fakelib.sub.VALUE, "cached": fakelib.sub.__spec__.cached,
                  "filled": process is not None and process.returncode == 0}))
"""


def _start(root: Path, *args: str, **env: str) -> tuple[dict[str, object], str]:
    done = subprocess.run(
        [sys.executable, "-v", "-c", START, *args],
        env=_env(root, **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def _tree(root: Path) -> Path:
    return root / "state" / "warm-cache" / "bytecode" / sys.implementation.cache_tag


def _filled(root: Path) -> dict[str, int]:
    """The tree's completion record, once a fill in the background has written it (60 s at most)."""
    deadline = time.monotonic() + 60
    while not (_tree(root) / COMPLETE).is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    record: dict[str, int] = json.loads((_tree(root) / COMPLETE).read_text())
    return record


def test_needed_only_when_python_would_compile_the_library_at_every_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = _library(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(sys, "pycache_prefix", None)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    assert bytecode_cache.needed("fakelib")
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    assert not bytecode_cache.needed("fakelib")  # Python writes __pycache__ itself (writable here)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    import py_compile

    py_compile.compile(str(package / "__init__.py"), quiet=2)  # bytecode beside the source
    assert not bytecode_cache.needed("fakelib")
    assert not bytecode_cache.needed("no_such_module_here")


def test_the_first_start_fills_the_tree_and_later_starts_read_it(tmp_path: Path) -> None:
    package = _library(tmp_path)
    first, _ = _start(tmp_path, "fill")
    # the first start imports from source as before (no prefix yet), then fills the tree
    assert first["found"] == EMPTY and first["filled"] is True
    assert not (package / "__pycache__").exists()  # nothing written beside the sources
    record = json.loads((_tree(tmp_path) / COMPLETE).read_text())
    assert record["compiled"] >= 2 and record["compiled"] == record["of"]

    second, trace = _start(tmp_path, "fill")
    cached = Path(str(second["cached"]))
    assert second["found"] == ACTIVE and second["filled"] is False  # filled once, not again
    assert cached.is_relative_to(_tree(tmp_path)) and cached.is_file()
    assert f"code object from '{cached}'" in trace  # imported from the tree's bytecode, not compiled

    # a changed source is compiled again and rewritten in the tree: never run stale
    time.sleep(0.01)
    (package / "sub.py").write_text("VALUE = 22  # changed\n")
    third, _ = _start(tmp_path)
    assert third["value"] == 22
    fourth, trace = _start(tmp_path)
    assert fourth["value"] == 22 and f"code object from '{cached}'" in trace

    off, trace = _start(tmp_path, **{bytecode_cache.ENV: "off"})
    assert off["found"] == OFF and f"code object from '{cached}'" not in trace


def test_an_endpoint_killed_right_after_ready_still_leaves_a_filled_tree(tmp_path: Path) -> None:
    _library(tmp_path)
    # as the console or a supervisor stops an endpoint: its whole process group, at once
    script = (
        "import os, signal\nfrom engine import bytecode_cache as b\nb.activate('fakelib')\nimport fakelib.sub\n"
        "b.fill_later()\nos.killpg(os.getpgrp(), signal.SIGKILL)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=_env(tmp_path), start_new_session=True, timeout=60, check=False
    )
    assert done.returncode == -signal.SIGKILL
    record = _filled(tmp_path)
    assert record["compiled"] >= 2 and record["compiled"] == record["of"]
    assert not list(_tree(tmp_path).glob(".sources-*"))  # the list it read is gone


def test_a_box_that_caches_bytecode_itself_is_left_alone(tmp_path: Path) -> None:
    _library(tmp_path)
    found, _ = _start(tmp_path, "fill", PYTHONDONTWRITEBYTECODE="")
    assert found["found"] == NOT_NEEDED and found["filled"] is False
    assert not _tree(tmp_path).exists()
    user_prefix = tmp_path / "mine"  # a prefix the user chose wins
    found, _ = _start(tmp_path, "fill", PYTHONPYCACHEPREFIX=str(user_prefix))
    assert found["found"] == NOT_NEEDED and Path(str(found["cached"])).is_relative_to(user_prefix)


def test_gen404_activates_it_before_any_command_runs(tmp_path: Path) -> None:
    _library(tmp_path)
    (_tree(tmp_path)).mkdir(parents=True)
    (_tree(tmp_path) / COMPLETE).write_text("{}")
    script = (
        "import sys\nfrom engine import bytecode_cache as b\nb.PROBE = 'fakelib'\nfrom engine.cli import main\n"
        "main([])\n"  # no command: prints the usage, after activating
        "print(b.state(), sys.pycache_prefix)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.splitlines()[-1].split() == [ACTIVE, str(_tree(tmp_path))]


def test_an_endpoint_fills_the_tree_once_its_preset_is_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.service.queue import Worker
    from engine.service.runtime import ModelHost

    package = _library(tmp_path)
    monkeypatch.setenv("GEN404_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("GEN404_WARM_CACHE_DIR", raising=False)
    monkeypatch.setattr(bytecode_cache, "_state", EMPTY)  # as on a box like the H200 one, first start
    # the endpoint's own imports are thousands of modules: two stand for them here
    monkeypatch.setattr(
        bytecode_cache, "imported_sources", lambda: [str(package / "__init__.py"), str(package / "sub.py")]
    )
    worker = Worker("test-bytecode")
    host = ModelHost(worker, "smoke", random_weights=True, use_cache=False, serve_early=False)
    try:
        host.start()
        host.builder.submit(lambda: None).result(120)
        assert host.health()["status"] == "ready"
        assert _filled(tmp_path)["compiled"] == 2
        assert (
            _tree(tmp_path) / str(package).lstrip("/") / f"sub.{sys.implementation.cache_tag}.pyc"
        ).is_file()
    finally:
        worker.stop()
        host.stop()
