"""Domain -> UI: the mining controller publishes its own changes (MiningChanged), and the UI-side
adapter turns domain events into the typed Textual Messages the App handles."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.app import App

from console.mining.controller import MiningChanged, MiningController
from console.mining.options import MiningOptions
from console.mining.scorers import GateOnlyScorer
from console.publisher import Publisher
from console.supervisor import EndpointsChanged, SupervisorNotice
from console.ui_messages import (
    EndpointsUpdated,
    MiningUpdated,
    SupervisorNoticed,
    forward_mining,
    supervisor_message,
)


def test_publisher_calls_listeners_in_order_until_unsubscribed() -> None:
    pub: Publisher[int] = Publisher()
    got: list[tuple[str, int]] = []
    pub.subscribe(lambda n: got.append(("a", n)))
    stop_b = pub.subscribe(lambda n: got.append(("b", n)))
    pub.publish(1)
    stop_b()
    pub.publish(2)
    assert got == [("a", 1), ("b", 1), ("a", 2)]


async def test_mining_controller_publishes_its_messages_and_its_own_failure(tmp_path: Path) -> None:
    empty = tmp_path / "prompts.txt"
    empty.write_text("# no prompts\n")
    controller = MiningController(MiningOptions(prompts_file=empty), endpoints=list, scorer=GateOnlyScorer())
    events: list[MiningChanged] = []
    controller.changes.subscribe(events.append)
    controller.set_message("waiting for endpoints")
    controller.set_message("waiting for endpoints")  # unchanged: not published again
    assert [e.message for e in events] == ["waiting for endpoints"]
    with pytest.raises(ValueError, match="no prompts"):
        await controller.run()
    assert controller.message.startswith("mining stopped: ValueError")
    assert events[-1].message == controller.message and events[-1].title.startswith("REHEARSAL")


def test_supervisor_events_become_typed_messages() -> None:
    notice = supervisor_message(SupervisorNotice("spawned gen-10006 (smoke)"))
    assert isinstance(notice, SupervisorNoticed) and notice.text == "spawned gen-10006 (smoke)"
    update = supervisor_message(EndpointsChanged((), ("cannot write state",)))
    assert (
        isinstance(update, EndpointsUpdated)
        and update.views == []
        and update.problems == ["cannot write state"]
    )


async def test_forwarded_events_reach_the_app_as_messages() -> None:
    received: list[MiningUpdated] = []

    class Recorder(App[None]):
        def on_mining_updated(self, message: MiningUpdated) -> None:
            received.append(message)

    controller = MiningController(MiningOptions(rehearsal=False), endpoints=list)
    app = Recorder()
    async with app.run_test() as pilot:
        forward_mining(controller, app)
        controller.set_message("waiting for 2 endpoint(s) to be ready")
        for _ in range(50):
            if received:
                break
            await pilot.pause(0.02)
    assert len(received) == 1
    assert received[0].message == "waiting for 2 endpoint(s) to be ready"
    assert received[0].title == controller.title()
