"""The first read of a lookup on Redis without the near cache: the script
(``JUDGE_CLAIMING``) judges entries by their headers (a few hundred bytes
of each), or, when the last lookup of the same keys judged them all fresh,
only confirms that their counters hold what it read and that they exist;
an ``MGET`` in the same packet reads them whole, so a body never passes
through Lua.  Against a redis-server of each test's own, sync and async."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from jinja2 import DictLoader, Environment

from jinja_fragcache import (
    FragmentCache,
    FragmentCacheExtension,
    FragmentRequest,
    RedisBackend,
)
from jinja_fragcache.backends import scripts
from jinja_fragcache.keys import lock_key, make_fragment_key, variant_version_key

from .support import near_quiet, trips

PREFIX = "judged"


class Site:
    """A cache on the test's Redis with the near cache off (unless
    *near_cache*), rendering one fragment sync or async, and an admin
    client of the same server."""

    def __init__(self, url: str, use_async: bool, near_cache: bool = False) -> None:
        self.backend = RedisBackend.from_url(url, near_cache=near_cache)
        self.cache = FragmentCache(self.backend, prefix=PREFIX, lock_wait=0.5)
        self.admin = redis.Redis.from_url(url)
        self.runner = asyncio.Runner() if use_async else None
        self.renders = 0

    def render(
        self, request: FragmentRequest, body: str = "fresh", meanwhile: Any = None
    ) -> str:
        """*request* rendered; *meanwhile* is called as its body renders,
        between the miss's read and its write."""

        def rendered() -> str:
            self.renders += 1
            if meanwhile is not None:
                meanwhile()
            return body

        if self.runner is None:
            return self.cache.render(request, rendered)

        async def arendered() -> str:
            return rendered()

        return self.runner.run(self.cache.render_async(request, arendered))

    def render_many(self, requests: list[FragmentRequest]) -> list[str]:
        def rendered(i: int) -> str:
            self.renders += 1
            return f"item {i}"

        if self.runner is None:
            return self.cache.render_many(requests, rendered)

        async def arendered(i: int) -> str:
            return rendered(i)

        return self.runner.run(self.cache.render_many_async(requests, arendered))

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


def _expecting(site: Site, request: FragmentRequest) -> None:
    """Render *request* until its next lookup expects what the last one
    judged: a miss writes it, a hit judges its header fresh."""
    site.render(request)
    site.render(request)


def test_a_hit_reads_the_header_in_lua_and_the_body_by_mget(site: Site) -> None:
    request = FragmentRequest("box", ("1",), 300)
    site.render(request)  # written; scripts loaded, connections open
    site.admin.config_resetstat()
    with trips() as sent:
        assert site.render(request) == "fresh"
    assert sent == [b"FCALL"]  # one packet: the script, then the MGET
    calls = site.calls()
    assert calls.get("getrange") == 1
    assert calls.get("mget") == 2  # the script's of the counters, and ours
    assert "get" not in calls  # no entry read whole inside the script
    assert site.renders == 1


def test_a_hit_after_a_judgement_of_every_entry_fresh_only_confirms_the_counters(
    site: Site,
) -> None:
    # The last lookup of these keys judged every entry fresh: this one
    # asks the script only whether the counters still hold what it read
    # then and whether the entries still exist.  No header is read.
    request = FragmentRequest("box", ("1",), 300)
    _expecting(site, request)
    site.admin.config_resetstat()
    with trips() as sent:
        assert site.render(request) == "fresh"
    assert sent == [b"FCALL"]
    calls = site.calls()
    assert "getrange" not in calls
    assert "get" not in calls
    assert calls.get("exists") == 1
    assert calls.get("mget") == 2  # the script's of the counters, and ours
    assert site.renders == 1


def test_a_page_of_many_entries_is_confirmed_in_one_script(site: Site) -> None:
    # Fifty siblings: one MGET of their counters and one EXISTS of them
    # all; one of them gone is claimed in that same first trip.
    requests = [FragmentRequest("card", (str(i),), 300) for i in range(50)]
    bodies = [f"item {i}" for i in range(50)]
    assert site.render_many(requests) == bodies  # written
    assert site.render_many(requests) == bodies  # judged fresh
    site.admin.config_resetstat()
    with trips() as sent:
        assert site.render_many(requests) == bodies
    assert sent == [b"FCALL"]
    calls = site.calls()
    assert "getrange" not in calls
    assert calls.get("exists") == 1
    assert calls.get("mget") == 2
    assert site.renders == 50
    site.admin.delete(_key(requests[7]))
    with trips() as sent:
        assert site.render_many(requests) == bodies
    assert sent == [b"FCALL", b"SET"]  # the write: SETs, then its script
    assert site.renders == 51


def _later(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    later = time.time() + seconds
    monkeypatch.setattr(time, "time", lambda: later)


@pytest.mark.parametrize(
    "change",
    [
        lambda site, key, monkeypatch: site.cache.invalidate("box", "1"),
        lambda site, key, monkeypatch: site.cache.invalidate_all("box"),
        lambda site, key, monkeypatch: site.cache.invalidate_tags("nav"),
        # Neither changes a counter: an entry evicted or deleted by hand,
        # an entry past the soonest soft expiry the judgement saw.
        lambda site, key, monkeypatch: site.admin.delete(key),
        lambda site, key, monkeypatch: _later(monkeypatch, 301),
        # A counter evicted or deleted by hand: made again, unpredictable.
        lambda site, key, monkeypatch: site.admin.delete(variant_version_key(key)),
    ],
    ids=[
        "invalidate",
        "invalidate_all",
        "invalidate_tags",
        "entry-gone",
        "stale",
        "counter-gone",
    ],
)
def test_what_ends_an_expectation_is_claimed_in_the_first_trip(
    site: Site,
    change: Callable[[Site, str, pytest.MonkeyPatch], object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Whatever makes the entry need a render, the lookup that expected it
    # fresh finds out in the script and claims there: two trips in all.
    request = FragmentRequest("box", ("1",), 300, tags=("nav",))
    key = _key(request)
    _expecting(site, request)
    change(site, key, monkeypatch)
    with trips() as sent:
        assert site.render(request, "again") == "again"
    assert sent == [b"FCALL", b"SET"]
    assert site.renders == 2
    assert site.admin.get(lock_key(key)) is None
    assert site.render(request, "unused") == "again"


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
    assert sent == [b"FCALL"]
    assert site.renders == 1
    assert site.calls().get("get") == 1  # the whole entry, once
    assert site.admin.get(lock_key(_key(request))) is None

    # Judged whole, a tag counter that changed makes it cold: claimed in
    # the first trip, rendered, written and released in the second.
    assert site.cache.invalidate_tags(tags[-1])
    with trips() as sent:
        assert site.render(request, "again") == "again"
    assert sent == [b"FCALL", b"SET"]
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
    assert sent == [b"FCALL", b"SET", b"MGET", b"SET"]
    assert site.renders == 2
    assert site.admin.get(lock_key(key)) is None
    assert site.render(request, "unused") == "ours"


#: Whether the script judges the entry by its header or, the last lookup
#: having judged it fresh, confirms what that one found.
_PATHS = pytest.mark.parametrize(
    "expecting", [False, True], ids=["judging", "expecting"]
)


@_PATHS
def test_an_entry_deleted_between_the_script_and_the_mget_is_a_miss(
    site: Site, expecting: bool
) -> None:
    # The script judged the entry fresh and claimed nothing; an
    # invalidation deletes it before the MGET.  The client finds nothing,
    # claims the usual way (one more trip) and renders: never a stale body.
    request = FragmentRequest("gone", ("1",), 300)
    assert site.render(request, "old") == "old"
    if expecting:
        assert site.render(request, "unused") == "old"
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


def test_a_nested_fragment_invalidated_ends_what_the_outer_expects(
    site: Site,
) -> None:
    # The outer entry records the inner one's counters; what a lookup of
    # the outer expects holds them too, so invalidating the inner one
    # makes the outer render again on its next lookup, never serve what it
    # held.
    env = Environment(
        loader=DictLoader(
            {
                "page.html": "{% cache_fragment 300 outer %}[{{ tick('outer') }}"
                "{% cache_fragment 300 inner %}{{ tick('inner') }}"
                "{% endcache_fragment %}]{% endcache_fragment %}"
            }
        ),
        extensions=[FragmentCacheExtension],
        enable_async=site.runner is not None,
    )
    env.fragment_cache = site.cache  # type: ignore[attr-defined]
    ticks = {"outer": 0, "inner": 0}

    def tick(name: str) -> str:
        ticks[name] += 1
        return f"{name}{ticks[name]}"

    def render() -> str:
        template = env.get_template("page.html")
        if site.runner is None:
            return template.render(tick=tick)
        return site.runner.run(template.render_async(tick=tick))

    assert render() == "[outer1inner1]"
    assert render() == "[outer1inner1]"  # judged fresh, nested counters too
    site.admin.config_resetstat()
    assert render() == "[outer1inner1]"
    assert "getrange" not in site.calls()  # expected
    assert site.cache.invalidate_all("inner")
    assert render() == "[outer2inner2]"


@_PATHS
def test_a_name_invalidated_between_the_script_and_the_mget(
    site: Site, expecting: bool
) -> None:
    # The script found the counters as they were; the bump lands before
    # the MGET, which finds the entry.  Judged by the counters the script
    # read, it is served: a read that came before the invalidation.  The
    # next lookup finds the bump.
    request = FragmentRequest("bumped", ("1",), 300)
    assert site.render(request, "old") == "old"
    if expecting:
        assert site.render(request, "unused") == "old"
    _between(site, lambda: site.cache.invalidate_all("bumped"))
    with trips() as sent:
        assert site.render(request, "unused") == "old"
    assert sent[-1] == b"MGET"  # nothing claimed, nothing written
    assert site.render(request, "new") == "new"
    assert site.renders == 2


def test_an_expiry_that_only_lua_reads_as_a_number_leaves_nothing_expected(
    site: Site,
) -> None:
    # Lua's tonumber reads "0x7fffffffff"; Python's float does not.  The
    # script judges such an entry fresh, and the backend expects nothing
    # of it rather than fail the read (the fragment cache then finds the
    # entry unreadable, as it would anywhere).
    from jinja_fragcache.backends.base import UNCLAIMED, ClaimingRead
    from jinja_fragcache.flow import new_version

    key = f"{PREFIX}:odd"
    site.admin.set(key, b"FC2 0x7fffffffff d t\nbody", px=60_000)
    counter = f"{PREFIX}:counter"
    read = ClaimingRead([key], [lock_key(key)], [counter], True, 30.0, new_version)
    for _ in range(2):
        claimed = site.backend.read_claiming(read)
        assert claimed.claims == [UNCLAIMED]
        assert claimed.values[0] == b"FC2 0x7fffffffff d t\nbody"


def test_a_read_whose_locks_are_named_otherwise_claims_those_locks(
    site: Site,
) -> None:
    # The script makes each lock key from its entry's key, as lock_key
    # does; a read that names its locks otherwise (no lookup does) is
    # claimed under the names it gives, by the script that is given them.
    from jinja_fragcache.backends.base import WON, ClaimingRead
    from jinja_fragcache.flow import new_version

    key = _key(FragmentRequest("named", ("1",), 300))
    lock = f"{PREFIX}:a-lock-of-its-own"
    read = ClaimingRead(
        [key], [lock], [variant_version_key(key)], True, 30.0, new_version
    )
    if site.runner is None:
        claimed = site.backend.read_claiming(read)
    else:
        claimed = site.runner.run(site.backend.aread_claiming(read))
    assert claimed.claims == [WON]
    assert site.admin.get(lock) == claimed.token
    assert site.admin.get(lock_key(key)) is None


def test_counters_whose_values_hold_a_space_are_never_expected(site: Site) -> None:
    # What a lookup expects goes to the script as the values joined by
    # spaces: with a space in a value, "a b" and "c" would read as "a"
    # and "b c".  Such values (never this library's) are judged each time.
    from jinja_fragcache.backends.base import ClaimingRead
    from jinja_fragcache.flow import new_version

    key = f"{PREFIX}:spaced"
    site.admin.set(key, b"FC2 - d t\nbody", px=60_000)
    first, second = f"{PREFIX}:first", f"{PREFIX}:second"
    site.admin.mset({first: b"a b", second: b"c"})
    read = ClaimingRead(
        [key], [lock_key(key)], [first, second], True, 30.0, new_version
    )

    def counters() -> list[bytes | None]:
        if site.runner is None:
            claimed = site.backend.read_claiming(read)
        else:
            claimed = site.runner.run(site.backend.aread_claiming(read))
        return claimed.values[1:]

    assert counters() == [b"a b", b"c"]
    assert counters() == [b"a b", b"c"]
    site.admin.mset({first: b"a", second: b"b c"})
    assert counters() == [b"a", b"b c"]


def _library_loaded(site: Site) -> bool:
    name = scripts.LIBRARY_NAME
    return bool(site.admin.execute_command("FUNCTION", "LIST", "LIBRARYNAME", name))


@pytest.mark.parametrize("forget", ["function-flush", "restart"])
def test_the_function_is_loaded_again_when_the_server_lacks_it(
    site: Site, restartable_redis: tuple[str, Any], forget: str
) -> None:
    # The script runs as a function (FCALL); a server that lost it (FUNCTION
    # FLUSH, a restart without persistence, a failover) is sent the library
    # ahead of the call once, as a script is sent again after NOSCRIPT.
    _, (start, stop, _freeze) = restartable_redis
    request = FragmentRequest("box", ("1",), 300)
    _expecting(site, request)
    assert _library_loaded(site)
    if forget == "function-flush":
        site.admin.function_flush()
        with trips() as sent:
            assert site.render(request, "unused") == "fresh"
        assert sent == [b"FCALL", b"FUNCTION"]  # refused, then loaded and run
    else:
        stop()
        start()
        assert site.render(request, "again") == "again"  # nothing kept
    assert _library_loaded(site)
    with trips() as sent:
        assert site.render(request, "unused") in ("fresh", "again")
    assert sent == [b"FCALL"]
    assert site.cache.statistics.as_dict()["box"]["errors"] == 0


@pytest.fixture(params=["renamed", "acl"])
def functionless_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """The URL of a server that refuses functions for good: one whose FCALL
    and FUNCTION are unknown commands (as before Redis 7), or one whose ACL
    denies them to the URL's user."""
    import shutil

    from .support import free_port, redis_server, started

    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is needed: apt-get install redis-server"
    port = free_port()
    extra: tuple[str, ...] = ()
    if request.param == "renamed":
        extra = ("--rename-command", "FCALL", "", "--rename-command", "FUNCTION", "")
    with started(redis_server(binary, port, tmp_path, *extra), port, "redis-server"):
        url = f"redis://127.0.0.1:{port}/0"
        if request.param == "acl":
            with redis.Redis.from_url(url) as admin:
                admin.acl_setuser(
                    "site",
                    enabled=True,
                    passwords=["+secret"],
                    keys=["*"],
                    commands=["+@all", "-fcall", "-function"],
                )
            url = f"redis://site:secret@127.0.0.1:{port}/0"
        yield url


@pytest.fixture
def without_functions(functionless_url: str, enable_async: bool) -> Iterator[Site]:
    """A site on a server that refuses functions for good."""
    made = Site(functionless_url, enable_async)
    yield made
    made.close()


def test_a_server_without_functions_is_sent_the_script(
    without_functions: Site,
) -> None:
    # The call refused and the library refused with it: the script goes
    # whole in that second trip, and by its SHA1 from then on.
    site = without_functions
    request = FragmentRequest("box", ("1",), 300)
    with trips() as sent:
        assert site.render(request) == "fresh"
    # (The new connections' own handshakes aside.)
    sent = [name for name in sent if name not in (b"AUTH", b"CLIENT")]
    # The write (its SETs, then its script: new to the server too,
    # NOSCRIPT), then EVAL of the script alone.
    assert sent == [b"FCALL", b"FUNCTION", b"EVAL", b"SET", b"EVAL"]
    with trips() as sent:
        assert site.render(request, "unused") == "fresh"  # judged
        assert site.render(request, "unused") == "fresh"  # confirmed
    assert sent == [b"EVALSHA", b"EVALSHA"]
    assert site.cache.invalidate("box", "1")
    with trips() as sent:
        assert site.render(request, "again") == "again"
    assert sent == [b"EVALSHA", b"SET"]  # claimed, written
    assert site.cache.statistics.as_dict()["box"]["errors"] == 0


def _scripts_run(site: Site) -> dict[str, int]:
    """The scripts' and functions' commands the server ran since the last
    ``CONFIG RESETSTAT`` (a call refused for a missing function or script
    counts; one of an unknown or denied command does not)."""
    calls = site.calls()
    names = ("fcall", "function|load", "function|flush", "evalsha", "eval")
    return {name: calls[name] for name in names if name in calls}


@pytest.fixture(params=[True, False], ids=["near", "no-near"])
def near_site(
    request: pytest.FixtureRequest,
    restartable_redis: tuple[str, Any],
    enable_async: bool,
) -> Iterator[Site]:
    """A :class:`Site` with the near cache on or off."""
    url, _ = restartable_redis
    made = Site(url, enable_async, near_cache=request.param)
    yield made
    made.close()


def test_each_function_is_loaded_again_when_the_server_lacks_it(
    near_site: Site,
) -> None:
    # The miss's read and its write, and the near cache's read of what it
    # lacks, run as functions of one library: a server that lost it is
    # sent the library ahead of whichever call found it missing, once.
    site = near_site
    site.render(FragmentRequest("box", ("warm",), 300))
    # Counted on a near cache that may answer, as a running site's: one
    # still starting, or applying a message, steps aside and reads
    # otherwise (tests.support.near_quiet).
    near_quiet(site.backend)
    site.admin.function_flush()
    site.admin.config_resetstat()
    assert site.render(FragmentRequest("box", ("1",), 300)) == "fresh"
    # The read refused, then loaded and run; the write.
    assert _scripts_run(site) == {"fcall": 3, "function|load": 1}
    site.admin.config_resetstat()
    flush = site.admin.function_flush
    assert site.render(FragmentRequest("box", ("2",), 300), "2", flush) == "2"
    # The read; the write refused, then loaded and run.
    assert _scripts_run(site) == {"fcall": 3, "function|load": 1, "function|flush": 1}
    if site.backend.near is not None:  # what the near cache lacks
        key = _key(FragmentRequest("box", ("3",), 300))
        site.admin.set(key, b"theirs")
        site.admin.function_flush()
        site.admin.config_resetstat()
        assert site.backend.get_many([key]) == [b"theirs"]
        assert _scripts_run(site) == {"fcall": 2, "function|load": 1}
        near_quiet(site.backend)  # the message about the key set applied
    site.admin.config_resetstat()
    assert site.render(FragmentRequest("box", ("4",), 300), "4") == "4"
    assert _scripts_run(site) == {"fcall": 2}
    assert site.cache.statistics.as_dict()["box"]["errors"] == 0


@pytest.mark.parametrize("near_cache", [True, False], ids=["near", "no-near"])
def test_a_server_without_functions_is_sent_every_script_by_sha(
    functionless_url: str, enable_async: bool, near_cache: bool
) -> None:
    # Once the server refused functions, every script goes by its SHA1,
    # whichever call found out (here the miss's read): the write too.
    site = Site(functionless_url, enable_async, near_cache=near_cache)
    try:
        assert site.render(FragmentRequest("box", ("1",), 300)) == "fresh"
        site.admin.config_resetstat()
        assert site.render(FragmentRequest("box", ("2",), 300), "2") == "2"
        assert _scripts_run(site) == {"evalsha": 2}
        assert site.cache.statistics.as_dict()["box"]["errors"] == 0
    finally:
        site.close()


def test_packets_kept_call_by_sha_once_the_server_refuses_functions(
    restartable_redis: tuple[str, Any], enable_async: bool
) -> None:
    # A server that starts refusing functions (an ACL changed) while the
    # backend keeps packets that call the script as a function: whichever
    # call finds out, every packet kept is made again, by SHA1.
    url, _ = restartable_redis
    with redis.Redis.from_url(url) as admin:
        admin.acl_setuser(
            "site", enabled=True, passwords=["+secret"], keys=["*"], commands=["+@all"]
        )
        site = Site(url.replace("//", "//site:secret@"), enable_async)
        try:
            kept = FragmentRequest("box", ("kept",), 300)
            _expecting(site, kept)
            admin.execute_command("ACL", "SETUSER", "site", "-fcall", "-function")
            assert site.render(FragmentRequest("box", ("other",), 300)) == "fresh"
            site.admin.config_resetstat()
            assert site.render(kept, "unused") == "fresh"
            assert _scripts_run(site) == {"evalsha": 1}
        finally:
            site.close()


def test_a_miss_on_a_server_out_of_memory_releases_its_lock(near_site: Site) -> None:
    # The server refuses the entry's SET (out of memory, no eviction): the
    # render is served, the error counted, and the miss's lock released
    # all the same, so the next request renders at once instead of waiting
    # for a lock that nobody will release.
    site = near_site
    site.render(FragmentRequest("box", ("warm",), 300))
    request = FragmentRequest("box", ("1",), 300)
    site.admin.config_set("maxmemory-policy", "noeviction")
    site.admin.config_set("maxmemory", "1")
    try:
        assert site.render(request, "first") == "first"
        assert site.admin.exists(lock_key(_key(request))) == 0
        assert site.render(request, "second") == "second"
    finally:
        site.admin.config_set("maxmemory", "0")
    assert site.cache.statistics.as_dict()["box"]["errors"] == 2
    assert site.render(request, "third") == "third"
    assert site.render(request, "unused") == "third"
