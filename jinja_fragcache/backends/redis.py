"""Redis, through redis-py (``pip install "jinja-fragcache[redis]"``)."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..keys import tracked_prefixes
from ..near import (
    DEFAULT_MAX_BYTES,
    NearCache,
    Plan,
    Registered,
    TrackingConnection,
    WriteToken,
)
from . import scripts
from .base import Claimed, ClaimingRead, Timeout, made
from .codecs import (
    _claimed,
    _claiming,
    _creating,
    _px,
    _releasing,
    _storing,
    _with_ttls,
)
from .judging import Calls, Judges
from .wire import AsyncWire, Wire

logger = logging.getLogger("jinja_fragcache")

if TYPE_CHECKING:
    import redis
    import redis.asyncio

#: Short enough to send whole: an invalidation is one round trip even on a
#: server that has not seen the script yet.
_INCR = scripts.INCR_EXISTING

#: The client name of every process's tracking connection.
TRACKING_NAME = "jinja-fragcache-near-cache"
#: The client name of the lookup connection that registers its tracking.
REGISTERED_NAME = "jinja-fragcache-near-cache-lookup"

_DEFAULTS = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}


def _import_redis() -> Any:
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            'RedisBackend needs redis-py: pip install "jinja-fragcache[redis]"'
        ) from exc
    return redis


def _like(pool: Any, **options: Any) -> Any:
    """A new, unconnected connection like *pool*'s own (its class and
    options: TLS, credentials, database, Sentinel), in RESP2 and handing
    back bytes, sync or asyncio as *pool* is."""
    kwargs = {
        **pool.connection_kwargs,
        "protocol": 2,
        "decode_responses": False,
        **options,
    }
    return pool.connection_class(**kwargs)


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
        if not hasattr(self.client, "connection_pool"):
            raise TypeError(
                "RedisBackend needs a redis.Redis client, got "
                f"{type(self.client).__name__} (for a Redis Cluster, use "
                "RedisClusterBackend)"
            )
        self._async_client = async_client
        self._async_clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, redis.asyncio.Redis
        ] = weakref.WeakKeyDictionary()
        #: The lookup's connections on each event loop (see :mod:`.wire`).
        self._async_wires: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, AsyncWire
        ] = weakref.WeakKeyDictionary()
        #: The near cache, or ``None`` when turned off.
        self.near: NearCache | None = None
        if near_cache:
            self.near = NearCache(
                self._tracking_connection,
                register=self._registered_connection,
                max_bytes=near_cache_bytes,
            )
            if near_cache_prefix is not None:
                self.near.bind_prefix(near_cache_prefix)
        #: Only the near cache counts changes (:attr:`generation`).
        self.counts_changes = self.near is not None
        #: What a lookup sends: its scripts and its ``MGET`` (see :mod:`.wire`).
        self._wire = Wire(
            self._command_connection,
            redis_module.ConnectionError,
            redis_module.ResponseError,
        )
        #: How the scripts reach the server (see :mod:`.judging`).
        self._calls = Calls(redis_module.ResponseError)
        #: Lookups without the near cache (see :mod:`.judging`).
        self._judges = Judges(self._calls)
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

    @classmethod
    def from_sentinel(
        cls, sentinels: Sequence[tuple[str, int]], service_name: str, **kwargs: Any
    ) -> RedisBackend:
        """The primary of *service_name*, found through *sentinels*
        (``[("host", 26379), ...]``), and found again after a failover:
        see :mod:`jinja_fragcache.backends.sentinel`."""
        from .sentinel import sentinel_backend

        return sentinel_backend(cls, sentinels, service_name, **kwargs)

    def __repr__(self) -> str:
        return f"<RedisBackend {self.client!r}>"

    @property
    def generation(self) -> int | None:
        """The near cache's count of changes, while it may answer reads;
        ``None`` without one (see :mod:`jinja_fragcache.memo`)."""
        return None if self.near is None else self.near.generation

    def bind_prefix(self, prefix: str) -> None:
        """Keep the keys of a fragment cache with this *prefix* in the near
        cache; :class:`~jinja_fragcache.FragmentCache` calls it."""
        if self.near is not None:
            self.near.bind_prefix(*tracked_prefixes(prefix))

    def _tracking_connection(self) -> TrackingConnection:
        """A new connection like the client's, for tracking: named, so that
        CLIENT LIST shows what the extra connection is."""
        conn: TrackingConnection = _like(
            self.client.connection_pool, client_name=TRACKING_NAME
        )
        return conn

    def _command_connection(self) -> Any:
        """A new connection like the client's, for :attr:`_wire`."""
        return _like(self.client.connection_pool)

    def _registered_connection(self) -> Any:
        """A new connection like the client's, for the near cache to
        register its tracking on and lend to lookups (named, as the
        tracking connection is)."""
        return _like(self.client.connection_pool, client_name=REGISTERED_NAME)

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
            values: list[bytes | None] = self._wire.call("MGET", *keys)
            return values
        if not plan.missing:
            return plan.values
        assert self.near is not None
        missing = [keys[i] for i in plan.missing]
        fetched = None
        try:
            reply = self._calls.call(self._wire, scripts.READ_TTL, missing, ())
            fetched = _with_ttls(reply)
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
            client: Any = self.client  # redis-py leaves execute_command untyped
            result = client.execute_command("EVAL", _INCR, 1, key, delta)
        finally:
            self._end(token, None)
        return None if result is None else int(result)

    def _plan(self, keys: Sequence[str]) -> Plan | None:
        """What the near cache holds of *keys*, when it may answer."""
        plan = None if self.near is None else self.near.plan(keys)
        return None if plan is None or plan.values is None else plan

    def _claimed(
        self,
        read: ClaimingRead,
        plan: Plan | None,
        token: bytes,
        reply: Sequence[Any] | None,
        created: Sequence[str] = (),
    ) -> Claimed | None:
        """Keep what the near cache may of a ``READ_CLAIMING`` *reply*
        (``None``: the script failed, and so does this); *created*: the
        counters the read created itself, unechoed (see :meth:`_lend`)."""
        claimed = pttls = None
        if reply is not None:
            claimed, pttls = _claimed(read, token, reply)
        if plan is not None:
            assert self.near is not None
            fetched = None
            if claimed is not None and pttls is not None:
                fetched = [(claimed.values[i], pttls[i]) for i in plan.missing]
            self.near.complete([*read.entries, *read.counters], plan, fetched, created)
        return claimed

    def read_claiming(self, read: ClaimingRead) -> Claimed:
        """One round trip: :data:`~.scripts.READ_CLAIMING` (see
        :class:`~.base.ClaimingRead`), or none when the near cache holds
        every key (nothing is claimed then).  Without the near cache,
        :data:`~.scripts.JUDGE_CLAIMING` judges entries by their headers,
        or confirms what its last judgement of them found, and an ``MGET``
        in the same packet reads them (see :mod:`.judging`)."""
        if self.near is None:
            judged = self._judges.read(self._wire, read)
            return self._read_claiming(read) if judged is None else judged
        plan = self._plan([*read.entries, *read.counters])
        if plan is not None and not plan.missing:
            assert plan.values is not None
            return made(Claimed, (plan.values, [0] * len(read.entries), {}, b""))
        token, written, reply = read.new_version(), self._begin(read.locks), None
        lent, created = self._lend(read, plan)
        try:
            keys, args = _claiming(read, token, plan is not None)
            ahead = (_creating(created, token), len(created))
            reply = self._call_on(lent, scripts.READ, keys, args, ahead)
        except self._calls.refused:
            # An error reply (a server out of memory refused the counters'
            # SETs): the script behind them ran and may hold locks for
            # *token*, which no write of this read will release.
            if created:
                self._release(read.locks, token)
            raise
        finally:
            self._end(written, None)
            claimed = self._claimed(read, plan, token, reply, created)
        assert claimed is not None  # else the script raised
        return claimed

    def _release(self, locks: Sequence[str], token: bytes) -> None:
        """Release whichever of *locks* still holds *token*; a failure is
        logged (the locks then expire)."""
        try:
            self.write_releasing({}, None, locks, token)
        except Exception:  # noqa: BLE001 - the read's own error follows
            logger.warning("could not release the locks of a failed read")

    def _lend(
        self, read: ClaimingRead, plan: Plan | None
    ) -> tuple[Registered | None, list[str]]:
        """The near cache's registered connection, for a claiming read
        that creates counters (those the near cache lacks: the read keeps
        what it finds of them), and those counters; ``None`` when there is
        nothing to create, the connection is in use, or a counter is held
        as missing (the script would create it, a write that the server
        need not echo when a script runs on that connection)."""
        if plan is None:
            return None, []
        assert self.near is not None and plan.values is not None
        n = len(read.entries)
        created = [read.counters[i - n] for i in plan.missing if i >= n]
        if not created or plan.values[n:].count(None) > len(created):
            return None, []
        lent = self.near.lend()
        return (lent, created) if lent is not None else (None, [])

    def _call_on(
        self,
        lent: Registered | None,
        script: scripts.Script,
        keys: Sequence[str],
        args: Sequence[Any],
        ahead: tuple[bytes, int],
    ) -> Any:
        """*script*'s reply on *keys* and *args*, behind *ahead*'s plain
        writes (packed, and their count) in the same packet: on
        :attr:`_wire`, or on *lent*, the near cache's registered
        connection, given back here, where the server echoes none of those
        writes."""
        try:
            return self._calls.call(self._wire, script, keys, args, lent, ahead)
        finally:
            if lent is not None:
                lent.give_back()

    def _read_claiming(self, read: ClaimingRead) -> Claimed:
        """:data:`~.scripts.READ_CLAIMING` without the near cache, which
        reads entries whole: for a read whose locks are not named as
        :func:`~jinja_fragcache.keys.lock_key` names them (no lookup's)."""
        token = read.new_version()
        keys, args = _claiming(read, token, False)
        reply = self._calls.call(self._wire, scripts.READ, keys, args)
        return _claimed(read, token, reply)[0]

    async def _aread_claiming(self, read: ClaimingRead) -> Claimed:
        """Async :meth:`_read_claiming`."""
        token = read.new_version()
        keys, args = _claiming(read, token, False)
        reply = await self._calls.acall(self._awire, scripts.READ, keys, args)
        return _claimed(read, token, reply)[0]

    def write_releasing(
        self,
        writes: Mapping[str, bytes],
        timeout: Timeout,
        locks: Sequence[str],
        token: bytes,
    ) -> None:
        """Store *writes* and release each lock still held by *token*, in
        one packet: the entries as plain ``SET`` commands (an entry that
        enters Lua costs the server about 12 instructions a byte), then
        :data:`~.scripts.WRITE_RELEASING`, given no entries.  On the near
        cache's registered connection, the server echoes those writes to no
        one: this process keeps what it wrote (:meth:`_end`)."""
        written, known = self._begin([*writes, *locks]), None
        lent = None if self.near is None or not writes else self.near.lend()
        try:
            keys, args = _releasing(locks, token)
            ahead = (_storing(writes, timeout), len(writes))
            self._call_on(lent, scripts.WRITE, keys, args, ahead)
            known = {key: (value, timeout) for key, value in writes.items()}
        finally:
            self._end(written, known)

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
        self._wire.close()
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

    @property
    def _awire(self) -> AsyncWire:
        """The lookup's asyncio connections on the running loop."""
        loop = asyncio.get_running_loop()
        wire = self._async_wires.get(loop)
        if wire is None:
            import redis.asyncio

            wire = self._async_wires[loop] = AsyncWire(
                self._async_command_connection,
                redis.asyncio.ConnectionError,
                redis.asyncio.ResponseError,
            )
        return wire

    def _async_command_connection(self) -> Any:
        """A new asyncio connection like the loop's client's."""
        return _like(self.async_client.connection_pool)

    def _make_async_client(self) -> redis.asyncio.Redis:
        from redis import asyncio as aioredis

        if self._url is not None:
            return aioredis.Redis.from_url(self._url, **self._options)
        pool = self.client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        # A sync parser cannot drive an asyncio connection (Django's and
        # django-redis' pools name one): the asyncio client picks its own.
        kwargs.pop("parser_class", None)
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
            values: list[bytes | None] = await self._awire.call("MGET", *keys)
            return values
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
        reply = await self._calls.acall(self._awire, scripts.READ_TTL, keys, ())
        return _with_ttls(reply)

    async def aread_claiming(self, read: ClaimingRead) -> Claimed:
        """Async :meth:`read_claiming`."""
        if self.near is None:
            judged = await self._judges.aread(self._awire, read)
            return await self._aread_claiming(read) if judged is None else judged
        plan = self._plan([*read.entries, *read.counters])
        if plan is not None and not plan.missing:
            assert plan.values is not None
            return made(Claimed, (plan.values, [0] * len(read.entries), {}, b""))
        token, written, reply = read.new_version(), self._begin(read.locks), None
        try:
            keys, args = _claiming(read, token, plan is not None)
            reply = await self._calls.acall(self._awire, scripts.READ, keys, args)
        finally:
            self._end(written, None)
            claimed = self._claimed(read, plan, token, reply)
        assert claimed is not None  # else the script raised
        return claimed

    async def awrite_releasing(
        self,
        writes: Mapping[str, bytes],
        timeout: Timeout,
        locks: Sequence[str],
        token: bytes,
    ) -> None:
        """Async :meth:`write_releasing`."""
        written, known = self._begin([*writes, *locks]), None
        try:
            keys, args = _releasing(locks, token)
            ahead = (_storing(writes, timeout), len(writes))
            await self._calls.acall(self._awire, scripts.WRITE, keys, args, ahead)
            known = {key: (value, timeout) for key, value in writes.items()}
        finally:
            self._end(written, known)

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
            client: Any = self.async_client
            result = await client.execute_command("EVAL", _INCR, 1, key, delta)
        finally:
            self._end(token, None)
        return None if result is None else int(result)

    async def aclose(self) -> None:
        """Close the asyncio client of the running loop, and its wire."""
        wire = self._async_wires.pop(asyncio.get_running_loop(), None)
        if wire is not None:
            await wire.aclose()
        client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose(close_connection_pool=True)
