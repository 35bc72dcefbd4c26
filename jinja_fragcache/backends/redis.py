"""Redis, through redis-py (``pip install "jinja-fragcache[redis]"``)."""

from __future__ import annotations

import asyncio
import hashlib
import math
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..near import DEFAULT_MAX_BYTES, NearCache, TrackingConnection, WriteToken
from .base import Timeout

if TYPE_CHECKING:
    import redis
    import redis.asyncio

# INCRBY that creates nothing: a counter must never reappear at a
# predictable value (see docs/design.md, "Versions and invalidation").
_INCR_EXISTING = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('INCRBY', KEYS[1], ARGV[1])
    return redis.call('GET', KEYS[1])
end
return false
"""
# (The new value is read back as a string: a Lua number is a double, and a
# counter beyond 2**53, as random versions are, would come back rounded.)

# Each key's value and PTTL in one command: a value kept by the near cache
# must not outlive its server-side expiry, and Redis reports an expiry only
# when it reclaims the key, which can be late (see jinja_fragcache.near).
_READ_WITH_TTL = """
local out = {}
for i, key in ipairs(KEYS) do
    out[2 * i - 1] = redis.call('GET', key)
    out[2 * i] = redis.call('PTTL', key)
end
return out
"""
_READ_WITH_TTL_SHA = hashlib.sha1(_READ_WITH_TTL.encode()).hexdigest()

#: The client name of every process's tracking connection.
TRACKING_NAME = "jinja-fragcache-near-cache"

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


def _with_ttls(reply: Sequence[Any]) -> list[tuple[bytes | None, int]]:
    """The script's flat ``[value, pttl, ...]`` as pairs; Lua's false is a
    missing value."""
    return [
        (
            _as_bytes(reply[i]) if reply[i] not in (None, False) else None,
            int(reply[i + 1]),
        )
        for i in range(0, len(reply), 2)
    ]


def _added(
    mapping: Mapping[str, bytes], added: list[bool], timeout: Timeout
) -> dict[str, tuple[bytes | None, float | None]]:
    """What an ``add_many`` made known: the values it stored.  Where it
    stored nothing, the server holds a value this process has not seen."""
    return {
        key: (value, timeout)
        for (key, value), ok in zip(mapping.items(), added, strict=True)
        if ok
    }


class RedisBackend:
    """A Redis server shared by every process.

    ``get_many`` is one MGET, or nothing at all when the near cache holds
    every key (only the keys it lacks are read otherwise, in one command);
    ``set_many`` and ``add_many`` are one pipeline each.  Nothing read from
    Redis is ever unpickled.  Clients made here use short socket timeouts
    (0.5 s) so that a dead server costs little: the fragment cache then
    fails open.

    :param client: a ``redis.Redis`` to use; made from *url* when ``None``.
    :param async_client: a ``redis.asyncio.Redis`` for async rendering.  When
        ``None``, one is made per event loop from *url* or from *client*'s
        connection settings (an asyncio client is bound to its loop).
    :param url: a Redis URL, used when *client* is ``None``.
    :param near_cache: keep the values read and written in a per-process
        near cache that Redis keeps coherent (``CLIENT TRACKING``, one extra
        connection and thread per process): a hit on keys already held
        costs no round trip.  See :mod:`jinja_fragcache.near`.  Only keys
        under a bound prefix are kept: :class:`~jinja_fragcache.FragmentCache`
        binds its own (:meth:`bind_prefix`), *near_cache_prefix* adds one.
    :param near_cache_bytes: the near cache's bound, keys plus values.
    :param near_cache_prefix: a key prefix to track besides those bound.
    :param connection_kwargs: passed to the clients made here.
    """

    def __init__(
        self,
        client: redis.Redis | None = None,
        *,
        async_client: redis.asyncio.Redis | None = None,
        url: str | None = None,
        near_cache: bool = True,
        near_cache_bytes: int = DEFAULT_MAX_BYTES,
        near_cache_prefix: str | None = None,
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
        self._read_with_ttl = self.client.register_script(_READ_WITH_TTL)
        #: The near cache, or ``None`` when turned off.
        self.near: NearCache | None = None
        if near_cache:
            self.near = NearCache(self._tracking_connection, max_bytes=near_cache_bytes)
            if near_cache_prefix is not None:
                self.near.bind_prefix(near_cache_prefix)
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

    def bind_prefix(self, prefix: str) -> None:
        """Keep the keys of a fragment cache with this *prefix* in the near
        cache; :class:`~jinja_fragcache.FragmentCache` calls it."""
        if self.near is not None:
            self.near.bind_prefix(f"{prefix}:")

    def _tracking_connection(self) -> TrackingConnection:
        """A new connection like the client's, in RESP2, for tracking."""
        pool = self.client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        # Named, so that CLIENT LIST shows what the extra connection is.
        kwargs.update(protocol=2, decode_responses=False, client_name=TRACKING_NAME)
        conn: TrackingConnection = pool.connection_class(**kwargs)
        return conn

    def _begin(self, keys: Any) -> WriteToken | None:
        return None if self.near is None else self.near.begin_write(keys)

    def _end(
        self,
        token: WriteToken | None,
        known: Mapping[str, tuple[bytes | None, float | None]] | None,
    ) -> None:
        if token is not None:
            assert self.near is not None
            self.near.end_write(token, known)

    # -- sync ------------------------------------------------------------------

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        plan = None if self.near is None else self.near.plan(keys)
        if plan is None or plan.values is None:
            return [_as_bytes(v) for v in self.client.mget(keys)]
        if not plan.missing:
            return plan.values
        assert self.near is not None
        missing = [keys[i] for i in plan.missing]
        fetched = None
        try:
            fetched = _with_ttls(self._read_with_ttl(keys=missing))
        finally:
            values = self.near.complete(keys, plan, fetched)
        return values

    def set(self, key: str, value: bytes, timeout: Timeout) -> None:
        token, known = self._begin((key,)), None
        try:
            self.client.set(key, value, px=_px(timeout))
            known = {key: (value, timeout)}
        finally:
            self._end(token, known)

    def set_many(self, mapping: Mapping[str, bytes], timeout: Timeout) -> None:
        token, known = self._begin(mapping), None
        try:
            pipe = self.client.pipeline(transaction=False)
            for key, value in mapping.items():
                pipe.set(key, value, px=_px(timeout))
            pipe.execute()
            known = {key: (value, timeout) for key, value in mapping.items()}
        finally:
            self._end(token, known)

    def add(self, key: str, value: bytes, timeout: Timeout) -> bool:
        return self.add_many({key: value}, timeout)[0]

    def add_many(self, mapping: Mapping[str, bytes], timeout: Timeout) -> list[bool]:
        token, known = self._begin(mapping), None
        try:
            if len(mapping) == 1:
                [(key, value)] = mapping.items()
                results = [self.client.set(key, value, px=_px(timeout), nx=True)]
            else:
                pipe = self.client.pipeline(transaction=False)
                for key, value in mapping.items():
                    pipe.set(key, value, px=_px(timeout), nx=True)
                results = pipe.execute()
            added = [bool(ok) for ok in results]
            known = _added(mapping, added, timeout)
        finally:
            self._end(token, known)
        return added

    def delete(self, key: str) -> None:
        token, known = self._begin((key,)), None
        try:
            self.client.delete(key)
            known = {key: (None, None)}
        finally:
            self._end(token, known)

    def incr(self, key: str, delta: int = 1) -> int | None:
        # Dropped, not kept: the server echoes the write as an invalidation.
        token = self._begin((key,))
        try:
            result = self._incr(keys=[key], args=[delta])
        finally:
            self._end(token, None)
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
        if self.near is not None:
            self.near.close()
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
        plan = None if self.near is None else self.near.plan(keys)
        if plan is None or plan.values is None:
            return [_as_bytes(v) for v in await self.async_client.mget(keys)]
        if not plan.missing:
            return plan.values
        assert self.near is not None
        fetched = None
        try:
            fetched = await self._aread_with_ttl([keys[i] for i in plan.missing])
        finally:
            values = self.near.complete(keys, plan, fetched)
        return values

    async def _aread_with_ttl(
        self, keys: Sequence[str]
    ) -> list[tuple[bytes | None, int]]:
        from redis.exceptions import NoScriptError

        client = self.async_client
        try:
            reply = await client.evalsha(_READ_WITH_TTL_SHA, len(keys), *keys)
        except NoScriptError:
            reply = await client.eval(_READ_WITH_TTL, len(keys), *keys)
        return _with_ttls(reply)

    async def aset(self, key: str, value: bytes, timeout: Timeout) -> None:
        token, known = self._begin((key,)), None
        try:
            await self.async_client.set(key, value, px=_px(timeout))
            known = {key: (value, timeout)}
        finally:
            self._end(token, known)

    async def aset_many(self, mapping: Mapping[str, bytes], timeout: Timeout) -> None:
        token, known = self._begin(mapping), None
        try:
            pipe = self.async_client.pipeline(transaction=False)
            for key, value in mapping.items():
                pipe.set(key, value, px=_px(timeout))
            await pipe.execute()
            known = {key: (value, timeout) for key, value in mapping.items()}
        finally:
            self._end(token, known)

    async def aadd(self, key: str, value: bytes, timeout: Timeout) -> bool:
        return (await self.aadd_many({key: value}, timeout))[0]

    async def aadd_many(
        self, mapping: Mapping[str, bytes], timeout: Timeout
    ) -> list[bool]:
        token, known = self._begin(mapping), None
        try:
            client = self.async_client
            if len(mapping) == 1:
                [(key, value)] = mapping.items()
                results = [await client.set(key, value, px=_px(timeout), nx=True)]
            else:
                pipe = client.pipeline(transaction=False)
                for key, value in mapping.items():
                    pipe.set(key, value, px=_px(timeout), nx=True)
                results = await pipe.execute()
            added = [bool(ok) for ok in results]
            known = _added(mapping, added, timeout)
        finally:
            self._end(token, known)
        return added

    async def adelete(self, key: str) -> None:
        token, known = self._begin((key,)), None
        try:
            await self.async_client.delete(key)
            known = {key: (None, None)}
        finally:
            self._end(token, known)

    async def aincr(self, key: str, delta: int = 1) -> int | None:
        # Dropped, not kept: the server echoes the write as an invalidation.
        token = self._begin((key,))
        try:
            result = await self.async_client.eval(_INCR_EXISTING, 1, key, delta)
        finally:
            self._end(token, None)
        return None if result is None else int(result)

    async def aclose(self) -> None:
        """Close the asyncio client of the running loop."""
        client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose(close_connection_pool=True)
