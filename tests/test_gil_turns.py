"""Short GIL turns while a build runs beside serving (engine/service/gil_turns.py)."""

from __future__ import annotations

import sys
import threading

import pytest

from engine.service.gil_turns import BESIDE_SERVING_S, short_gil_turns


def test_the_interval_is_short_inside_and_restored_after() -> None:
    before = sys.getswitchinterval()
    with short_gil_turns():
        assert sys.getswitchinterval() == pytest.approx(BESIDE_SERVING_S)
    assert sys.getswitchinterval() == before


def test_overlapping_builds_keep_it_short_until_the_last_ends() -> None:
    before = sys.getswitchinterval()
    first_in, release_first = threading.Event(), threading.Event()

    def first() -> None:
        with short_gil_turns():
            first_in.set()
            release_first.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    assert first_in.wait(10)
    with short_gil_turns():  # a second build while the first runs
        assert sys.getswitchinterval() == pytest.approx(BESIDE_SERVING_S)
    assert sys.getswitchinterval() == pytest.approx(BESIDE_SERVING_S)  # the first is still building
    release_first.set()
    thread.join()
    assert sys.getswitchinterval() == before


def test_a_failed_build_restores_it_too() -> None:
    before = sys.getswitchinterval()
    try:
        with short_gil_turns():
            raise RuntimeError("compile failed")
    except RuntimeError:
        pass
    assert sys.getswitchinterval() == before
