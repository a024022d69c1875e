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
