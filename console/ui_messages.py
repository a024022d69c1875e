"""The UI-side adapter: domain events (console/publisher.py) become typed Textual Messages.

The supervisor and the mining controller publish plain events and know nothing of Textual; each
`forward_*` subscribes a listener that posts the matching Message to the app, whose `on_*`
handlers update the panes. `post_message` is safe from any thread.
"""

from __future__ import annotations

from collections.abc import Callable

from textual.message import Message
from textual.message_pump import MessagePump

from console.gpu import GpuSnapshot
from console.mining.controller import MiningChanged, MiningController
from console.remote import RemoteEndpoints, RemotesChanged
from console.supervisor import EndpointsChanged, EndpointView, Supervisor, SupervisorEvent, SupervisorNotice


class GpuUpdated(Message):
    """A fresh NVML sample (posted by the app's GPU sampling thread)."""

    def __init__(self, snapshot: GpuSnapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class EndpointsUpdated(Message):
    """The supervisor's views of every endpoint, and its standing problems."""

    def __init__(self, views: list[EndpointView], problems: list[str], seq: int = 0) -> None:
        super().__init__()
        self.views = views
        self.problems = problems
        self.seq = seq  # the supervisor's publication number (EndpointsChanged.seq)


class RemotesUpdated(Message):
    """Views of the endpoints on other boxes, and each box's GPUs as (host, snapshot)."""

    def __init__(self, views: list[EndpointView], gpus: list[tuple[str, GpuSnapshot]]) -> None:
        super().__init__()
        self.views = views
        self.gpus = gpus


class SupervisorNoticed(Message):
    """A human-readable supervisor event (spawned, crashed, restarted, cannot write a file)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class MiningUpdated(Message):
    """The mining controller's title or status message changed."""

    def __init__(self, title: str, message: str) -> None:
        super().__init__()
        self.title = title
        self.message = message


def supervisor_message(event: SupervisorEvent) -> Message:
    if isinstance(event, EndpointsChanged):
        return EndpointsUpdated(list(event.views), list(event.problems), event.seq)
    assert isinstance(event, SupervisorNotice)
    return SupervisorNoticed(event.text)


def forward_supervisor(supervisor: Supervisor, target: MessagePump) -> Callable[[], None]:
    """Post every supervisor event to `target` as a Message; returns the unsubscribe function."""

    def post(event: SupervisorEvent) -> None:
        target.post_message(supervisor_message(event))

    return supervisor.changes.subscribe(post)


def forward_mining(controller: MiningController, target: MessagePump) -> Callable[[], None]:
    """Post every mining change to `target` as a MiningUpdated; returns the unsubscribe function."""

    def post(event: MiningChanged) -> None:
        target.post_message(MiningUpdated(event.title, event.message))

    return controller.changes.subscribe(post)


def forward_remotes(remotes: RemoteEndpoints, target: MessagePump) -> Callable[[], None]:
    """Post every remote polling round to `target` as a RemotesUpdated; returns the unsubscribe."""

    def post(event: RemotesChanged) -> None:
        target.post_message(RemotesUpdated(list(event.views), list(event.gpus)))

    return remotes.changes.subscribe(post)
