"""Stores: where the engine keeps state and history. :class:`MemoryStore` and :class:`SqliteStore` are embedded."""

from __future__ import annotations

from .base import Store
from .memory import MemoryStore
from .sqlite import SqliteStore

__all__ = ["Store", "MemoryStore", "SqliteStore"]
