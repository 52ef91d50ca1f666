"""The Transport port: publish payloads on topics, subscribe handlers to MQTT-style topic filters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Handler", "Subscription", "Transport", "topic_matches"]

Handler = Callable[[str, Any], None]


class Subscription(Protocol):
    """A live subscription; ``cancel()`` stops delivery."""

    def cancel(self) -> None:
        """Stop delivering to this subscription's handler."""


class Transport(Protocol):
    """Anything that can publish and subscribe (memory, MQTT, AMQP, NATS, ...)."""

    def publish(self, topic: str, payload: Any) -> None:
        """Send ``payload`` to every subscription whose filter matches ``topic``."""

    def subscribe(self, topic_filter: str, handler: Handler) -> Subscription:
        """Call ``handler(topic, payload)`` for every message matching ``topic_filter`` (``+`` and ``#`` wildcards)."""


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching: ``+`` matches one level, a trailing ``#`` matches the rest (including nothing)."""
    f_parts = topic_filter.split("/")
    t_parts = topic.split("/")
    for index, part in enumerate(f_parts):
        if part == "#":
            return index == len(f_parts) - 1
        if index >= len(t_parts):
            return False
        if part != "+" and part != t_parts[index]:
            return False
    return len(f_parts) == len(t_parts)
