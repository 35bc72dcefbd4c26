"""Redis behind Sentinel: :meth:`RedisBackend.from_sentinel`, or
:class:`SentinelBackend` by name (``FRAGCACHE["BACKEND"]``).

Every connection asks the sentinels for the current primary when it is
made (redis-py's ``SentinelConnectionPool``), and a pool drops its idle
connections when the primary changes, so a failover needs no restart: the
renders that meet the switch fail open (uncached, correct), and caching
resumes on the new primary once the breaker lets a call through.

- The async client follows the primary too: one
  ``redis.asyncio.sentinel.Sentinel(...).master_for(...)`` client per
  event loop (an asyncio client belongs to its loop).
- The near cache stays on.  Its tracking connection, and the lookup
  connection that registers its tracking, are made like the sync client's
  pool makes its own (``SentinelManagedConnection``), so they, too, connect
  to the primary the sentinels name at that moment (the same one: checked
  by ``run_id``); when the old primary dies they are lost, the near cache
  empties and is used again only once tracking is back, on the new
  primary.  When the old primary lives on and is demoted, the sentinel
  that reconfigures it kills its normal and pub/sub clients (``CLIENT KILL
  TYPE normal`` and ``pubsub``), those two among them.  The window left: an
  old primary cut off from the sentinels but not from this process keeps
  its clients, so until it is reconfigured this process may answer from
  its near cache values that another process changed on the new primary.
  Pass ``near_cache=False`` where that window matters.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .redis import _DEFAULTS, RedisBackend, _import_redis

if TYPE_CHECKING:
    import redis.asyncio


def _pairs(sentinels: Sequence[Sequence[Any]]) -> list[tuple[str, int]]:
    """``[("host", port), ...]``; settings give lists, not tuples."""
    return [(str(host), int(port)) for host, port in sentinels]


class SentinelBackend(RedisBackend):
    """A :class:`~jinja_fragcache.RedisBackend` on the primary of
    *service_name*, found through *sentinels* and found again after a
    failover.

    :param sentinels: ``[("host", 26379), ...]``.
    :param service_name: the name the sentinels monitor (``mymaster``).
    :param sentinel_kwargs: connection options for the sentinels
        themselves (a password, TLS); short timeouts by default.
    :param async_client: an asyncio client to use on every loop; by default
        one is made per event loop through ``redis.asyncio.sentinel``.
    :param near_cache: see :class:`~jinja_fragcache.RedisBackend` and this
        module's notes.
    :param kwargs: the other :class:`~jinja_fragcache.RedisBackend` options,
        and connection options for the primary.
    """

    def __init__(
        self,
        sentinels: Sequence[Sequence[Any]],
        service_name: str,
        *,
        sentinel_kwargs: dict[str, Any] | None = None,
        async_client: redis.asyncio.Redis | None = None,
        **kwargs: Any,
    ) -> None:
        Sentinel: Any = _import_redis().sentinel.Sentinel

        backend_options = {
            name: kwargs.pop(name)
            for name in ("near_cache", "near_cache_bytes", "near_cache_prefix")
            if name in kwargs
        }
        self._sentinels = _pairs(sentinels)
        self.service_name = service_name
        self._connection = {**_DEFAULTS, **kwargs, "decode_responses": False}
        self._sentinel_options = {**_DEFAULTS, **(sentinel_kwargs or {})}
        self.sentinel = Sentinel(
            self._sentinels, sentinel_kwargs=self._sentinel_options
        )
        client = self.sentinel.master_for(service_name, **self._connection)
        self._async_sentinels: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, Any
        ] = weakref.WeakKeyDictionary()
        super().__init__(client, async_client=async_client, **backend_options)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.service_name!r} via {self._sentinels}>"

    def close(self) -> None:
        super().close()
        for client in self.sentinel.sentinels:
            client.close()

    async def aclose(self) -> None:
        await super().aclose()
        sentinel = self._async_sentinels.pop(asyncio.get_running_loop(), None)
        for client in getattr(sentinel, "sentinels", ()):
            await client.aclose()

    def _make_async_client(self) -> redis.asyncio.Redis:
        from redis.asyncio import sentinel as aio_sentinel

        Sentinel: Any = aio_sentinel.Sentinel
        sentinel = Sentinel(self._sentinels, sentinel_kwargs=self._sentinel_options)
        # Its clients of the sentinels are closed with the loop's client.
        self._async_sentinels[asyncio.get_running_loop()] = sentinel
        client: redis.asyncio.Redis = sentinel.master_for(
            self.service_name, **self._connection
        )
        return client


_CLASSES: dict[type[RedisBackend], type[SentinelBackend]] = {}


def _sentinel_class(cls: type[RedisBackend]) -> type[SentinelBackend]:
    """*cls* (a subclass of RedisBackend) on a sentinel-found primary."""
    if issubclass(cls, SentinelBackend):
        return cls
    if cls is RedisBackend:
        return SentinelBackend
    made = _CLASSES.get(cls)
    if made is None:
        made = _CLASSES[cls] = type(
            f"Sentinel{cls.__name__}", (SentinelBackend, cls), {}
        )
    return made


def sentinel_backend(
    cls: type[RedisBackend],
    sentinels: Sequence[tuple[str, int]],
    service_name: str,
    **kwargs: Any,
) -> RedisBackend:
    """What :meth:`RedisBackend.from_sentinel` returns: a
    :class:`SentinelBackend` (of *cls*, for a subclass)."""
    return _sentinel_class(cls)(sentinels, service_name, **kwargs)
