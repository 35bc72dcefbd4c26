"""cachelib's in-process caches, for Flask users."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .base import SyncBackendMixin, Timeout


def _safe_cache_types() -> tuple[type, ...]:
    try:
        from cachelib import NullCache, SimpleCache
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            'CachelibBackend needs cachelib: pip install "jinja-fragcache[cachelib]"'
        ) from exc
    return (SimpleCache, NullCache)


class CachelibBackend(SyncBackendMixin):
    """Wraps a cachelib ``SimpleCache`` (or ``NullCache``).

    cachelib's shared caches (``RedisCache``, ``MemcachedCache``,
    ``FileSystemCache``, …) unpickle whatever they read, so anyone able to
    write to the shared store could run code in every web process.  They are
    refused: use :class:`~jinja_fragcache.RedisBackend` for Redis.

    cachelib counts a timeout of ``0`` as "never expire" and ``None`` as "its
    default"; this adapter converts Django's meaning, used everywhere in this
    library, at its edge.  Its async methods call the sync ones, which never
    block on I/O for an in-process cache.
    """

    def __init__(self, cache: Any) -> None:
        safe = _safe_cache_types()
        if not isinstance(cache, safe):
            raise TypeError(
                f"CachelibBackend accepts only in-process caches "
                f"({', '.join(t.__name__ for t in safe)}), not "
                f"{type(cache).__name__}: cachelib's shared caches unpickle what "
                "they read. Use jinja_fragcache.RedisBackend for Redis."
            )
        self.cache: Any = cache

    @staticmethod
    def _timeout(timeout: Timeout) -> int:
        return 0 if timeout is None else max(1, math.ceil(timeout))

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return list(self.cache.get_many(*keys)) if keys else []

    def set(self, key: str, value: bytes, timeout: Timeout) -> None:
        self.cache.set(key, value, timeout=self._timeout(timeout))

    def set_many(self, mapping: Mapping[str, bytes], timeout: Timeout) -> None:
        self.cache.set_many(dict(mapping), timeout=self._timeout(timeout))

    def add(self, key: str, value: bytes, timeout: Timeout) -> bool:
        return bool(self.cache.add(key, value, timeout=self._timeout(timeout)))

    def delete(self, key: str) -> None:
        self.cache.delete(key)

    def incr(self, key: str, delta: int = 1) -> int | None:
        # cachelib's inc() creates a missing key; this must not.  The check
        # and the increment are two steps, which a SimpleCache shared by
        # threads may interleave: at worst a bump is lost, never invented.
        current = self.cache.get(key)
        if current is None:
            return None
        result = int(current) + delta
        self.cache.set(key, str(result).encode("ascii"), timeout=0)
        return result
