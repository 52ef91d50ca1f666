"""Transports: how events, commands and records move between devices, gateways and the cloud.

The :class:`Transport` port is the boundary; :class:`MemoryTransport` is the embedded default. Network transports
(MQTT, AMQP, CoAP, NATS JetStream) live in their own modules behind optional extras.
"""

from __future__ import annotations

from .base import Handler, Subscription, Transport, topic_matches
from .memory import MemoryTransport

__all__ = ["Transport", "Subscription", "Handler", "MemoryTransport", "topic_matches"]
