"""Redis, through redis-py (``pip install "jinja-fragcache[redis]"``)."""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .base import Timeout

if TYPE_CHECKING:
    import redis
    import redis.asyncio

# INCRBY that creates nothing: a counter must never reappear at a
# predictable value (see docs/design.md, "Versions and invalidation").
_INCR_EXISTING = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    return redis.call('INCRBY', KEYS[1], ARGV[1])
end
return false
"""

_DEFAULTS = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}


def _import_redis() -> Any:
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            'RedisBackend needs redis-py: pip install "jinja-fragcache[redis]"'
        ) from exc
    return redis


def _px(timeout: Timeout) -> int | None:
    return None if timeout is None else max(1, math.ceil(timeout * 1000))


def _as_bytes(value: bytes | str | None) -> bytes | None:
    # A client made with decode_responses=True hands back str.
    return value.encode() if isinstance(value, str) else value


class RedisBackend:
    """A Redis server shared by every process.

    ``get_many`` is one MGET; ``set_many`` and ``add_many`` are one pipeline
    each.  Nothing read from Redis is ever unpickled.  Clients made here use
    short socket timeouts (0.5 s) so that a dead server costs little: the
    fragment cache then fails open.

    :param client: a ``redis.Redis`` to use; made from *url* when ``None``.
    :param async_client: a ``redis.asyncio.Redis`` for async rendering.  When
        ``None``, one is made per event loop from *url* or from *client*'s
        connection settings (an asyncio client is bound to its loop).
    :param url: a Redis URL, used when *client* is ``None``.
    :param connection_kwargs: passed to the clients made here.
    """

    def __init__(
        self,
        client: redis.Redis | None = None,
        *,
        async_client: redis.asyncio.Redis | None = None,
        url: str | None = None,
        **connection_kwargs: Any,
    ) -> None:
        redis_module = _import_redis()
        if client is None and url is None:
            raise ValueError("RedisBackend needs a client or a url")
        self._options = {**_DEFAULTS, **connection_kwargs, "decode_responses": False}
        self._url = url
        self.client: redis.Redis = client or redis_module.Redis.from_url(
            url, **self._options
        )
        self._async_client = async_client
        self._async_clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, redis.asyncio.Redis
        ] = weakref.WeakKeyDictionary()
        self._incr = self.client.register_script(_INCR_EXISTING)
        #: The server answered and refused the command (an expiry it cannot
        #: take, OOM): that request's error, not an outage.
        self.request_errors = (
            redis_module.ResponseError,
            redis_module.DataError,
        )

    @classmethod
    def from_url(cls, url: str, **connection_kwargs: Any) -> RedisBackend:
        """Connect to *url*, e.g. ``redis://localhost:6379/0`` or
        ``unix:///run/redis.sock?db=1``."""
        return cls(url=url, **connection_kwargs)

    def __repr__(self) -> str:
        return f"<RedisBackend {self.client!r}>"

    # -- sync ------------------------------------------------------------------

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        return [_as_bytes(v) for v in self.client.mget(keys)]

    def set(self, key: str, value: bytes, timeout: Timeout) -> None:
        self.client.set(key, value, px=_px(timeout))

    def set_many(self, mapping: Mapping[str, bytes], timeout: Timeout) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, value in mapping.items():
            pipe.set(key, value, px=_px(timeout))
        pipe.execute()

    def add(self, key: str, value: bytes, timeout: Timeout) -> bool:
        return bool(self.client.set(key, value, px=_px(timeout), nx=True))

    def add_many(self, mapping: Mapping[str, bytes], timeout: Timeout) -> list[bool]:
        pipe = self.client.pipeline(transaction=False)
        for key, value in mapping.items():
            pipe.set(key, value, px=_px(timeout), nx=True)
        return [bool(ok) for ok in pipe.execute()]

    def delete(self, key: str) -> None:
        self.client.delete(key)

    def incr(self, key: str, delta: int = 1) -> int | None:
        result = self._incr(keys=[key], args=[delta])
        return None if result is None else int(result)

    def info(self) -> dict[str, int | None]:
        """Server figures: keys, memory used and peak, keyspace hits/misses."""
        info = self.client.info()
        return {
            "keys": int(self.client.dbsize()),
            "memory_used": info.get("used_memory"),
            "memory_peak": info.get("used_memory_peak"),
            "hits": info.get("keyspace_hits"),
            "misses": info.get("keyspace_misses"),
        }

    def close(self) -> None:
        self.client.close()

    # -- async -------------------------------------------------------------------

    @property
    def async_client(self) -> redis.asyncio.Redis:
        """The asyncio client of the running event loop."""
        if self._async_client is not None:
            return self._async_client
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = self._async_clients[loop] = self._make_async_client()
        return client

    def _make_async_client(self) -> redis.asyncio.Redis:
        from redis import asyncio as aioredis

        if self._url is not None:
            return aioredis.Redis.from_url(self._url, **self._options)
        pool = self.client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        if "path" in kwargs:
            kwargs["connection_class"] = aioredis.UnixDomainSocketConnection
        elif kwargs.pop("ssl", False) or "ssl_keyfile" in kwargs:
            kwargs["connection_class"] = aioredis.SSLConnection
        kwargs["decode_responses"] = False
        return aioredis.Redis(connection_pool=aioredis.ConnectionPool(**kwargs))

    async def aget_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        return [_as_bytes(v) for v in await self.async_client.mget(keys)]

    async def aset(self, key: str, value: bytes, timeout: Timeout) -> None:
        await self.async_client.set(key, value, px=_px(timeout))

    async def aset_many(self, mapping: Mapping[str, bytes], timeout: Timeout) -> None:
        pipe = self.async_client.pipeline(transaction=False)
        for key, value in mapping.items():
            pipe.set(key, value, px=_px(timeout))
        await pipe.execute()

    async def aadd(self, key: str, value: bytes, timeout: Timeout) -> bool:
        return bool(await self.async_client.set(key, value, px=_px(timeout), nx=True))

    async def aadd_many(
        self, mapping: Mapping[str, bytes], timeout: Timeout
    ) -> list[bool]:
        pipe = self.async_client.pipeline(transaction=False)
        for key, value in mapping.items():
            pipe.set(key, value, px=_px(timeout), nx=True)
        return [bool(ok) for ok in await pipe.execute()]

    async def adelete(self, key: str) -> None:
        await self.async_client.delete(key)

    async def aincr(self, key: str, delta: int = 1) -> int | None:
        result = await self.async_client.eval(_INCR_EXISTING, 1, key, delta)
        return None if result is None else int(result)

    async def aclose(self) -> None:
        """Close the asyncio client of the running loop."""
        client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose(close_connection_pool=True)
