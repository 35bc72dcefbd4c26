"""The core's backend protocol on a Django cache alias."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache import caches

from jinja_fragcache.backends.base import Timeout


def _store(value: bytes) -> bytes | int:
    # Version counters are decimal digits; kept as ints, they work with the
    # cache's own atomic incr (INCRBY on Redis, incr on memcached).
    if len(value) <= 19 and value.isdigit() and (value == b"0" or value[:1] != b"0"):
        number = int(value)
        if number < 2**63:  # what Redis INCR accepts
            return number
    return value


def _load(value: object) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, int):
        return str(value).encode("ascii")
    return None  # not ours: a miss


def _request_errors() -> tuple[type[Exception], ...]:
    """The client libraries' errors for a server that answered and refused
    one request (a value too large, an expiry it cannot take)."""
    found: list[type[Exception]] = []
    try:
        import redis

        found += [redis.ResponseError, redis.DataError]
    except ImportError:
        pass
    try:
        from pymemcache import exceptions

        found += [exceptions.MemcacheClientError, exceptions.MemcacheServerError]
    except ImportError:
        pass
    return tuple(found)


def _django_timeout(timeout: Timeout) -> int | None:
    # Whole seconds: memcached reads a fraction below one as "expire now".
    return None if timeout is None else max(1, math.ceil(timeout))


class DjangoCacheBackend:
    """Entries and counters in ``django.core.cache.caches[alias]``.

    Works with every Django cache (LocMem, django-redis, Django's RedisCache,
    PyMemcacheCache, DatabaseCache).  ``get_many`` is the cache's own, one
    round trip where the server allows it; ``incr`` is the cache's own, which
    refuses a missing key.  The async methods are Django's async cache API.

    Values pass through the cache's own serializer, which for most Django
    caches is pickle: a store that others can write to must be trusted as
    Django's sessions and caches already trust it.
    """

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.request_errors = _request_errors()

    @property
    def cache(self) -> Any:
        return caches[self.alias]

    def __repr__(self) -> str:
        return f"<DjangoCacheBackend {self.alias!r}>"

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        found = self.cache.get_many(keys)
        return [_load(found.get(key)) for key in keys]

    def set(self, key: str, value: bytes, timeout: Timeout) -> None:
        self.cache.set(key, _store(value), _django_timeout(timeout))

    def set_many(self, mapping: Mapping[str, bytes], timeout: Timeout) -> None:
        self.cache.set_many(
            {k: _store(v) for k, v in mapping.items()}, _django_timeout(timeout)
        )

    def add(self, key: str, value: bytes, timeout: Timeout) -> bool:
        return bool(self.cache.add(key, _store(value), _django_timeout(timeout)))

    def add_many(self, mapping: Mapping[str, bytes], timeout: Timeout) -> list[bool]:
        return [self.add(key, value, timeout) for key, value in mapping.items()]

    def delete(self, key: str) -> None:
        self.cache.delete(key)

    def incr(self, key: str, delta: int = 1) -> int | None:
        try:
            return int(self.cache.incr(key, delta))
        except ValueError:  # Django's answer for a missing key
            return None

    async def aget_many(self, keys: Sequence[str]) -> list[bytes | None]:
        found = await self.cache.aget_many(keys)
        return [_load(found.get(key)) for key in keys]

    async def aset(self, key: str, value: bytes, timeout: Timeout) -> None:
        await self.cache.aset(key, _store(value), _django_timeout(timeout))

    async def aset_many(self, mapping: Mapping[str, bytes], timeout: Timeout) -> None:
        await self.cache.aset_many(
            {k: _store(v) for k, v in mapping.items()}, _django_timeout(timeout)
        )

    async def aadd(self, key: str, value: bytes, timeout: Timeout) -> bool:
        value_ = _store(value)
        return bool(await self.cache.aadd(key, value_, _django_timeout(timeout)))

    async def aadd_many(
        self, mapping: Mapping[str, bytes], timeout: Timeout
    ) -> list[bool]:
        return [await self.aadd(key, value, timeout) for key, value in mapping.items()]

    async def adelete(self, key: str) -> None:
        await self.cache.adelete(key)

    async def aincr(self, key: str, delta: int = 1) -> int | None:
        try:
            return int(await self.cache.aincr(key, delta))
        except ValueError:
            return None

    def close(self) -> None:
        """Close this thread's connection (Django does it per request)."""
        self.cache.close()

    async def aclose(self) -> None:
        """Close the connection of the thread Django's async cache API uses
        (Django's own ``aclose`` does nothing)."""
        await sync_to_async(self.close, thread_sensitive=True)()

    def info(self) -> dict[str, int | None]:
        """Server figures where the cache is Redis; ``None`` elsewhere."""
        client = _redis_client(self.cache)
        if client is None:
            return dict.fromkeys(
                ("keys", "memory_used", "memory_peak", "hits", "misses")
            )
        info = client.info()
        return {
            "keys": int(client.dbsize()),
            "memory_used": info.get("used_memory"),
            "memory_peak": info.get("used_memory_peak"),
            "hits": info.get("keyspace_hits"),
            "misses": info.get("keyspace_misses"),
        }


def _redis_client(cache: Any) -> Any:
    """The redis-py client behind django-redis or Django's RedisCache."""
    module = type(cache).__module__
    if module.startswith("django_redis"):
        return cache.client.get_client(write=False)
    if module == "django.core.cache.backends.redis":
        return cache._cache.get_client()
    return None
