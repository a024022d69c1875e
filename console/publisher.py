"""How domain modules (supervisor, mining) tell the UI that something changed, without knowing it.

A domain object owns a `Publisher[Event]` and calls `publish(event)`; the UI side subscribes a
listener that turns each event into a typed Textual Message (console/ui_messages.py). Textual-free:
tests and scripts subscribe plain functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

Event = TypeVar("Event")


class Publisher(Generic[Event]):
    """Listeners run synchronously in the publisher's thread, in subscription order."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[Event], None]] = []

    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        """Add a listener; returns the function that removes it again."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def publish(self, event: Event) -> None:
        for listener in list(self._listeners):  # a listener may unsubscribe while we iterate
            listener(event)
