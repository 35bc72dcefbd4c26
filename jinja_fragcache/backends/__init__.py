"""Backends: one module each, all keeping :class:`~.base.Backend`'s contract."""

from __future__ import annotations

from .base import Backend
from .memory import MemoryBackend

__all__ = ["Backend", "MemoryBackend"]
