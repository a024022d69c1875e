"""The endpoint's note in the console's table, from its /health (console/endpoint_client.py)."""

from __future__ import annotations

from console.endpoint_client import health_note, switch_summary


def test_note_shows_the_start_phase_with_its_elapsed_time() -> None:
    health = {"status": "loading", "phase": "compiling", "phase_elapsed_s": 41.6, "message": "warming up"}
    assert health_note(health) == "compiling 42s; warming up"


def test_note_shows_a_switch_being_built_beside_the_serving_preset() -> None:
    health = {
        "status": "ready",
        "message": "ready in 12.0s",
        "switch": {
            "target": "text_mv",
            "state": "building",
            "phase": "loading cache",
            "phase_elapsed_s": 3.2,
        },
    }
    assert health_note(health) == "→ text_mv: loading cache 3s"


def test_note_shows_the_whole_models_building_after_a_start_on_block_packages() -> None:
    health = {
        "status": "ready",
        "preset": "text_mv_fast",
        "message": "ready in 7.7s; whole-model packages building beside the block packages",
        "switch": {
            "target": "text_mv_fast",
            "kind": "upgrade",
            "state": "building",
            "phase": "compiling in helpers",
            "phase_elapsed_s": 30.4,
        },
    }
    assert health_note(health) == "whole-model packages: compiling in helpers 30s"


def test_note_is_the_endpoint_message_otherwise() -> None:
    done = {"status": "ready", "message": "ready in 9.1s", "switch": {"target": "x", "state": "failed"}}
    assert health_note(done) == "ready in 9.1s"
    assert (
        health_note({"status": "loading", "message": "loading models"}) == "loading models"
    )  # older endpoint


def test_switch_summary_says_how_models_were_had() -> None:
    assert switch_summary({"reloaded": False, "elapsed_s": 12.34}) == " (models shared, built in 12.3s)"
    assert (
        switch_summary({"reloaded": True, "elapsed_s": 80})
        == " (models loaded beside the old ones, built in 80.0s)"
    )
    assert switch_summary({"preset": "smoke", "reloaded": False, "status": "ready"}) == ""


def test_a_warming_endpoint_is_answering_and_its_note_shows_the_compile_beside_it() -> None:
    from console.endpoint_client import ANSWERING, StatsSummary
    from console.supervisor.model import Status, status_from_health

    health = {
        "status": "warming",
        "message": "answering uncompiled, compiling beside it (ready in 9.0s)",
        "switch": {
            "target": "text_mv_fast",
            "state": "building",
            "phase": "compiling",
            "phase_elapsed_s": 30.4,
        },
    }
    assert health_note(health) == "answering uncompiled; compiling 30s"
    assert status_from_health(health, StatsSummary()) is Status.WARMING
    assert Status.WARMING.value in ANSWERING  # the header's count, the advisor and the rehearsal use it
