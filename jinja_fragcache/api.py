"""The process default cache, and invalidation from plain Python code."""

from __future__ import annotations

import threading

from .cache import FragmentCache

_default: FragmentCache | None = None
_default_lock = threading.Lock()


def get_default_cache() -> FragmentCache:
    """The cache of every environment that names none: a :class:`MemoryBackend`.

    Created on first use and kept for the life of the process.
    """
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = FragmentCache()
    return _default


def set_default_cache(cache: FragmentCache | None) -> None:
    """Replace the process default; ``None`` makes a fresh one on next use."""
    global _default
    with _default_lock:
        _default = cache


def invalidate_fragment(
    name: str, *vary: object, cache: FragmentCache | None = None
) -> bool:
    """Clear one variant of fragment *name* (every variant when *vary* is empty
    is :meth:`FragmentCache.invalidate_all`, not this).

    Uses the process default cache unless *cache* is given, so a Flask view
    can call ``invalidate_fragment("card", product.id)`` and nothing more.
    """
    return (cache or get_default_cache()).invalidate(name, *vary)
