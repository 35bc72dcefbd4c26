"""The first read of a lookup on Redis without the near cache: the script
judges entries by their headers (``READ_CLAIMING`` reading a few hundred
bytes of each) and an ``MGET`` in the same packet reads them whole, so a
body never passes through Lua.  Against a redis-server of each test's own,
sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from jinja_fragcache import FragmentCache, FragmentRequest, RedisBackend
from jinja_fragcache.backends import scripts
from jinja_fragcache.keys import lock_key, make_fragment_key

from .support import trips

PREFIX = "judged"


class Site:
    """A cache on the test's Redis with the near cache off, rendering one
    fragment sync or async, and an admin client of the same server."""

    def __init__(self, url: str, use_async: bool) -> None:
        self.backend = RedisBackend.from_url(url, near_cache=False)
        self.cache = FragmentCache(self.backend, prefix=PREFIX, lock_wait=0.5)
        self.admin = redis.Redis.from_url(url)
        self.runner = asyncio.Runner() if use_async else None
        self.renders = 0

    def render(self, request: FragmentRequest, body: str = "fresh") -> str:
        def rendered() -> str:
            self.renders += 1
            return body

        if self.runner is None:
            return self.cache.render(request, rendered)

        async def arendered() -> str:
            return rendered()

        return self.runner.run(self.cache.render_async(request, arendered))

    def calls(self) -> dict[str, int]:
        """Commands run by the server since the last ``CONFIG RESETSTAT``,
        the scripts' own included."""
        stats = self.admin.info("commandstats")
        return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}

    def close(self) -> None:
        if self.runner is not None:
            self.runner.run(self.backend.aclose())
            self.runner.close()
        self.backend.close()
        self.admin.close()


@pytest.fixture
def site(restartable_redis: tuple[str, Any], enable_async: bool) -> Iterator[Site]:
    url, _ = restartable_redis
    made = Site(url, enable_async)
    yield made
    made.close()


def _between(site: Site, act: Callable[[], object]) -> None:
    """Make the next first read send its script and its ``MGET`` in two
    packets, with *act* run by another client in between: a write that
    lands between the two commands, as one may on a busy server."""
    wire = site.backend._wire if site.runner is None else None
    if wire is None:
        # The running loop's wire only exists inside it: patch the class.
        from jinja_fragcache.backends.wire import AsyncWire

        real = AsyncWire.exchange

        async def aexchange(self: AsyncWire, packed: bytes, count: int) -> list[Any]:
            if count != 2:
                return await real(self, packed, count)
            AsyncWire.exchange = real  # type: ignore[method-assign]
            at = packed.rindex(b"*", 0, packed.index(b"$4\r\nMGET\r\n"))
            first = await real(self, packed[:at], 1)
            act()
            return first + await real(self, packed[at:], 1)

        AsyncWire.exchange = aexchange  # type: ignore[method-assign]
        return
    real_sync = wire.exchange

    def exchange(packed: bytes, count: int) -> list[Any]:
        if count != 2:
            return real_sync(packed, count)
        del wire.exchange  # type: ignore[method-assign]  # once
        at = packed.rindex(b"*", 0, packed.index(b"$4\r\nMGET\r\n"))
        first = real_sync(packed[:at], 1)
        act()
        return first + real_sync(packed[at:], 1)

    wire.exchange = exchange  # type: ignore[method-assign]


def _key(request: FragmentRequest) -> str:
    return make_fragment_key(request.name, request.vary, prefix=PREFIX)


def test_a_hit_reads_the_header_in_lua_and_the_body_by_mget(site: Site) -> None:
    request = FragmentRequest("box", ("1",), 300)
    site.render(request)
    site.render(request)  # scripts loaded, connections open
    site.admin.config_resetstat()
    with trips() as sent:
        assert site.render(request) == "fresh"
    assert sent == [b"EVALSHA"]  # one packet: the script, then the MGET
    calls = site.calls()
    assert calls.get("getrange") == 1
    assert calls.get("mget") == 2  # the script's of the counters, and ours
    assert "get" not in calls  # no entry read whole inside the script
    assert site.renders == 1


def test_a_header_longer_than_what_the_script_reads_is_read_whole(
    site: Site,
) -> None:
    # Tags make the header long: past HEADER_BYTES, the script reads the
    # whole entry and judges it all the same (fresh: no claim, a hit in one
    # trip; judged from the cut header it would be cold, and re-rendered).
    tags = tuple(f"tag-{i}-" + "x" * 40 for i in range(12))
    request = FragmentRequest("long", ("1",), 300, tags=tags)
    site.render(request)
    stored = site.admin.get(_key(request))
    assert stored is not None
    assert stored.index(b"\n") > scripts.HEADER_BYTES
    site.admin.config_resetstat()
    with trips() as sent:
        assert site.render(request) == "fresh"
    assert sent == [b"EVALSHA"]
    assert site.renders == 1
    assert site.calls().get("get") == 1  # the whole entry, once
    assert site.admin.get(lock_key(_key(request))) is None

    # Judged whole, a tag counter that changed makes it cold: claimed in
    # the first trip, rendered, written and released in the second.
    assert site.cache.invalidate_tags(tags[-1])
    with trips() as sent:
        assert site.render(request, "again") == "again"
    assert sent == [b"EVALSHA", b"EVALSHA"]
    assert site.renders == 2


def test_an_entry_written_between_the_script_and_the_mget_is_rendered_by_the_claim(
    site: Site,
) -> None:
    # The script found no entry and won its lock; another request's write
    # lands before the MGET.  The client's own judgement of what the MGET
    # found decides, and since it holds the lock it renders and releases
    # it: a lock won is never left to expire.
    request = FragmentRequest("race", ("1",), 300)
    key = _key(request)
    site.render(request, "theirs")
    theirs = site.admin.get(key)
    assert theirs is not None
    site.admin.delete(key)
    _between(site, lambda: site.admin.set(key, theirs, px=60_000))
    with trips() as sent:
        assert site.render(request, "ours") == "ours"
    # The first packet, cut in two around the other client's SET, then the
    # write that releases: no claim of its own.
    assert sent == [b"EVALSHA", b"SET", b"MGET", b"EVALSHA"]
    assert site.renders == 2
    assert site.admin.get(lock_key(key)) is None
    assert site.render(request, "unused") == "ours"


def test_an_entry_deleted_between_the_script_and_the_mget_is_a_miss(
    site: Site,
) -> None:
    # The script judged the entry fresh and claimed nothing; an
    # invalidation deletes it before the MGET.  The client finds nothing,
    # claims the usual way (one more trip) and renders: never a stale body.
    request = FragmentRequest("gone", ("1",), 300)
    assert site.render(request, "old") == "old"
    _between(site, lambda: site.cache.invalidate("gone", "1"))
    assert site.render(request, "new") == "new"
    assert site.renders == 2
    assert site.admin.get(lock_key(_key(request))) is None
    # What it wrote records the counters read before the invalidation
    # landed: the invalidation is not lost, the next request renders.
    assert site.render(request, "newer") == "newer"
    assert site.render(request, "unused") == "newer"


def test_a_stale_entry_refreshed_between_the_script_and_the_mget(
    site: Site,
) -> None:
    # Stale serving: the script claimed the refresh; another writer
    # refreshed the entry before the MGET.  The claim holder renders and
    # releases; a request that finds the lock held serves what it read.
    request = FragmentRequest("stale", ("1",), 300)
    key = _key(request)
    site.render(request, "v1")
    stored = site.admin.get(key)
    assert stored is not None and stored.startswith(b"FC2 ")
    expiry = stored.split(b" ")[1]
    site.admin.set(key, stored.replace(expiry, b"1.000", 1), px=60_000)
    _between(site, lambda: site.admin.set(key, stored, px=60_000))
    assert site.render(request, "v2") == "v2"
    assert site.admin.get(lock_key(key)) is None

    site.admin.set(key, stored.replace(expiry, b"1.000", 1), px=60_000)
    site.admin.set(lock_key(key), b"someone", px=30_000)
    assert site.render(request, "unused") == "v1"  # stale, served
    assert site.renders == 2
