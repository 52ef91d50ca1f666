"""In-memory transport: synchronous, ordered, deterministic delivery inside one process (the embedded default)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .base import Handler, topic_matches

__all__ = ["MemoryTransport"]


@dataclass
class _MemorySubscription:
    transport: MemoryTransport
    topic_filter: str
    handler: Handler
    active: bool = True

    def cancel(self) -> None:
        self.active = False
        self.transport._subscriptions = [s for s in self.transport._subscriptions if s is not self]


@dataclass
class MemoryTransport:
    """Deliver each published payload, in order, to every matching subscription (in subscription order).

    ``published`` counts messages per topic, so tests can check what crossed the transport.
    """

    _subscriptions: list[_MemorySubscription] = field(default_factory=list)
    published: dict[str, int] = field(default_factory=dict)

    def publish(self, topic: str, payload: Any) -> None:
        """Deliver ``payload`` synchronously to every matching subscriber."""
        self.published[topic] = self.published.get(topic, 0) + 1
        for sub in list(self._subscriptions):
            if sub.active and topic_matches(sub.topic_filter, topic):
                sub.handler(topic, payload)

    def subscribe(self, topic_filter: str, handler: Handler) -> _MemorySubscription:
        """Register ``handler`` for topics matching ``topic_filter``."""
        sub = _MemorySubscription(self, topic_filter, handler)
        self._subscriptions.append(sub)
        return sub
