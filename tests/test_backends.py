"""One contract, run against every backend; then what is particular to each."""

from __future__ import annotations

import pickle
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from cachelib import FileSystemCache, RedisCache, SimpleCache

from jinja_fragcache import Backend, CachelibBackend, MemoryBackend, RedisBackend

from .support import free_port, in_threads, run, trips

DJANGO_CACHES = {
    "django-locmem": "django.core.cache.backends.locmem.LocMemCache",
    "django-redis": "django_redis.cache.RedisCache",
    "django-builtin-redis": "django.core.cache.backends.redis.RedisCache",
    "django-memcached": "django.core.cache.backends.memcached.PyMemcacheCache",
    "django-db": "django.core.cache.backends.db.DatabaseCache",
}


@pytest.fixture(params=["memory", "redis", "cachelib", *DJANGO_CACHES])
def backend(request: pytest.FixtureRequest) -> Any:
    return make_backend(request, request.param)


# Not django-db: the sqlite test database is not visible from the worker
# thread behind Django's async cache API (a test-setup limit, not the
# adapter's; the adapter's async methods are the same for every alias).
@pytest.fixture(
    params=["memory", "redis", "cachelib", *sorted(set(DJANGO_CACHES) - {"django-db"})]
)
def async_backend(request: pytest.FixtureRequest) -> Any:
    return make_backend(request, request.param)


def make_backend(request: pytest.FixtureRequest, kind: str) -> Any:
    if kind == "memory":
        return MemoryBackend()
    if kind == "cachelib":
        return CachelibBackend(SimpleCache())
    if kind in DJANGO_CACHES:
        return django_backend(request, kind)
    return request.getfixturevalue("redis_backend")


def django_backend(request: pytest.FixtureRequest, kind: str) -> Any:
    """The bridge's adapter on a real server of each kind Django supports."""
    from django.core.management import call_command

    from django_bridge.backend import DjangoCacheBackend

    location = {
        "django-redis": "redis_url",
        "django-builtin-redis": "redis_url",
        "django-memcached": "memcached_location",
    }.get(kind)
    config: dict[str, Any] = {"BACKEND": DJANGO_CACHES[kind]}
    if location:
        config["LOCATION"] = request.getfixturevalue(location)
    if kind == "django-db":
        # Committed, so the async API's worker thread sees the table too.
        request.getfixturevalue("transactional_db")
        config["LOCATION"] = "fragcache_table"
    settings = request.getfixturevalue("settings")
    settings.CACHES = {**settings.CACHES, "under_test": config}
    if kind == "django-db":
        call_command("createcachetable", "fragcache_table", verbosity=0)
    return DjangoCacheBackend("under_test")


def expiry(backend: Any) -> tuple[float, float]:
    """A short timeout and how long to wait for it to pass.

    cachelib and Django's caches count whole seconds; Django's database
    cache also drops the microseconds of both ends of the comparison.
    """
    name = type(backend).__name__
    if name == "DjangoCacheBackend" and "db." in backend.cache.__module__ + ".":
        return 1.0, 2.2
    if name in ("CachelibBackend", "DjangoCacheBackend"):
        return 1.0, 1.15
    return 0.2, 0.35


@pytest.fixture
def key() -> Callable[[], str]:
    """Keys of this test's own: a shared server is never flushed."""
    prefix = uuid.uuid4().hex
    return lambda: f"{prefix}:{uuid.uuid4().hex[:8]}"


class Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (pytest.fail, ("a backend unpickled a value",))


def test_keeps_the_protocol(backend: Any) -> None:
    assert isinstance(backend, Backend)


def test_get_many_keeps_order_and_reports_missing(backend: Any, key: Any) -> None:
    a, b, c = key(), key(), key()
    backend.set(a, b"A", 60)
    backend.set(c, b"C", None)
    assert backend.get_many([c, b, a]) == [b"C", None, b"A"]
    assert backend.get_many([]) == []


def test_set_many_overwrites(backend: Any, key: Any) -> None:
    a, b = key(), key()
    backend.set(a, b"old", 60)
    backend.set_many({a: b"new", b: b"B"}, 60)
    assert backend.get_many([a, b]) == [b"new", b"B"]


@pytest.mark.parametrize(
    "value", [b"", b"\x80\x00!\xff", b"!" + pickle.dumps(Boom()), pickle.dumps(Boom())]
)
def test_values_are_raw_bytes_never_unpickled(
    backend: Any, key: Any, value: bytes
) -> None:
    k = key()
    backend.set(k, value, 60)
    assert backend.get_many([k]) == [value]


def test_timeouts_expire_and_none_does_not(backend: Any, key: Any) -> None:
    short, forever = key(), key()
    # cachelib counts whole seconds, the others milliseconds.
    seconds, wait = expiry(backend)
    backend.set_many({short: b"s"}, seconds)
    backend.set(forever, b"f", None)
    time.sleep(wait)
    assert backend.get_many([short, forever]) == [None, b"f"]


def test_add_only_when_missing(backend: Any, key: Any) -> None:
    k = key()
    seconds, wait = expiry(backend)
    assert backend.add(k, b"first", seconds) is True
    assert backend.add(k, b"second", seconds) is False
    assert backend.get_many([k]) == [b"first"]
    time.sleep(wait)
    assert backend.add(k, b"third", 60) is True
    assert backend.get_many([k]) == [b"third"]


def test_add_many(backend: Any, key: Any) -> None:
    a, b = key(), key()
    backend.set(a, b"taken", 60)
    assert backend.add_many({a: b"x", b: b"y"}, 60) == [False, True]
    assert backend.get_many([a, b]) == [b"taken", b"y"]


def test_delete(backend: Any, key: Any) -> None:
    k = key()
    backend.set(k, b"x", 60)
    backend.delete(k)
    backend.delete(k)  # missing: not an error
    assert backend.get_many([k]) == [None]


def test_incr_never_creates(backend: Any, key: Any) -> None:
    k, missing = key(), key()
    backend.set(k, b"41", None)
    assert backend.incr(k) == 42
    assert backend.incr(k, 8) == 50
    assert backend.get_many([k]) == [b"50"]
    assert backend.incr(missing) is None
    assert backend.get_many([missing]) == [None]


def test_incr_is_exact_at_the_size_of_random_versions(backend: Any, key: Any) -> None:
    # Versions are 62 random bits: beyond a double's 53, where a Lua number
    # (or any float on the way) would round.
    k = key()
    start = 2**62 - 7
    backend.set(k, str(start).encode(), None)
    result = backend.incr(k)
    assert backend.get_many([k]) == [str(start + 1).encode()]
    # django-redis's own incr script rounds its reply (not what it stores);
    # the core reads a reply only as "the counter existed".
    from django_bridge.backend import DjangoCacheBackend

    if not isinstance(backend, DjangoCacheBackend):
        assert result == start + 1
    else:
        assert result is not None


def test_async_incr_is_exact_too(async_backend: Any, key: Any) -> None:
    k = key()
    start = 2**62 - 7

    async def scenario() -> int | None:
        await async_backend.aset(k, str(start).encode(), None)
        return await async_backend.aincr(k)  # type: ignore[no-any-return]

    assert run(scenario(), async_backend) == start + 1


def test_async_twins(async_backend: Any, key: Any) -> None:
    backend = async_backend

    async def scenario() -> None:
        a, b, c = key(), key(), key()
        await backend.aset(a, b"A", 60)
        await backend.aset_many({b: b"B"}, 60)
        assert await backend.aget_many([a, b, c]) == [b"A", b"B", None]
        assert await backend.aadd(c, b"5", None) is True
        assert await backend.aadd(c, b"6", None) is False
        assert await backend.aadd_many({c: b"7", key(): b"8"}, 60) == [False, True]
        assert await backend.aincr(c, 2) == 7
        assert await backend.aincr(key()) is None
        await backend.adelete(a)
        assert await backend.aget_many([a]) == [None]

    run(scenario(), backend)
    run(scenario(), backend)  # a second event loop


# -- MemoryBackend ------------------------------------------------------------------


def test_memory_evicts_least_recently_used_by_count() -> None:
    backend = MemoryBackend(max_entries=3)
    backend.set_many({"a": b"1", "b": b"2", "c": b"3"}, None)
    backend.get_many(["a"])  # a is used again: b is now the oldest
    backend.set("d", b"4", None)
    assert backend.get_many(["a", "b", "c", "d"]) == [b"1", None, b"3", b"4"]
    assert len(backend) == 3


def test_memory_evicts_by_bytes() -> None:
    backend = MemoryBackend(max_bytes=100)
    backend.set("a", b"x" * 40, None)
    backend.set("b", b"x" * 40, None)
    backend.set("c", b"x" * 40, None)
    assert backend.get_many(["a", "b", "c"]) == [None, b"x" * 40, b"x" * 40]
    assert backend.bytes_used <= 100
    backend.set("huge", b"x" * 200, None)  # can never fit: not stored
    assert backend.get_many(["huge", "b"]) == [None, b"x" * 40]


def test_memory_counts_every_change_a_read_could_see() -> None:
    # The memo of checked hits (memo.py) answers while the count stays.
    from jinja_fragcache.backends.base import ClaimingRead
    from jinja_fragcache.flow import new_version

    backend = MemoryBackend(max_entries=3)
    last = backend.generation

    def changed() -> bool:
        nonlocal last
        seen, last = last, backend.generation
        return seen != last

    backend.set("a", b"1", None)
    assert changed()
    backend.get_many(["a", "nothing"])
    assert backend.add("a", b"2", None) is False
    backend.delete("nothing")
    assert not changed()
    backend.set("a", b"2", None)
    assert changed()
    backend.set_many({"b": b"1", "c": b"1"}, None)
    assert changed()
    assert backend.incr("a") == 3
    assert changed()
    backend.set("d", b"1", None)  # evicts b, the least recently used
    assert changed() and backend.get_many(["b"]) == [None]
    assert not changed()
    backend.delete("c")
    assert changed()
    backend.set("soon", b"1", 0.01)
    assert changed()
    time.sleep(0.02)
    assert backend.get_many(["soon"]) == [None]  # expired: dropped
    assert changed()
    read = ClaimingRead(["e"], ["e:lock"], ["e:v"], True, 30.0, new_version)
    token = backend.read_claiming(read).token  # creates e:v, claims e:lock
    assert changed()
    backend.write_releasing({}, None, ["e:lock"], b"another")  # not its lock
    assert not changed()
    backend.write_releasing({}, None, ["e:lock"], token)
    assert changed() and backend.get_many(["e:lock"]) == [None]
    backend.clear()
    assert changed()


def test_memory_keeps_a_fragment_caches_entries_as_they_are() -> None:
    # In one process nothing else reads the store: a miss writes its Entry
    # without encoding it, and a read hands that very entry back.
    from jinja_fragcache import FragmentCache, FragmentRequest
    from jinja_fragcache.entry import Entry

    backend = MemoryBackend()
    cache = FragmentCache(backend)
    request = FragmentRequest("box", ("1",), 300)
    assert cache.render(request, lambda: "héllo") == "héllo"
    (kept,) = backend.get_many([cache.key_for("box", "1")])
    assert type(kept) is Entry and kept.body == "héllo"
    assert cache.render(request, lambda: "unused") == "héllo"
    cache.invalidate("box", "1")
    assert cache.render(request, lambda: "again") == "again"


def test_a_backend_that_does_not_keep_entries_gets_them_encoded() -> None:
    from jinja_fragcache import FragmentCache, FragmentRequest
    from jinja_fragcache.entry import Entry

    class Encoding(MemoryBackend):
        keeps_entries = False

    backend = Encoding()
    cache = FragmentCache(backend)
    cache.render(FragmentRequest("box", ("1",), 300), lambda: "héllo")
    (stored,) = backend.get_many([cache.key_for("box", "1")])
    assert type(stored) is bytes and Entry.decode(stored).body == "héllo"


def test_memory_counts_kept_entries_against_its_byte_bound() -> None:
    import sys

    from jinja_fragcache.entry import Entry

    body = "x" * 1000
    backend = MemoryBackend(max_bytes=5 * sys.getsizeof(body))
    for i in range(20):
        backend.write_releasing({f"k{i}": Entry(body, None)}, None, [], b"t")
        assert backend.bytes_used <= backend.max_bytes
    assert 0 < len(backend) < 5
    for i in range(20):
        backend.delete(f"k{i}")
    assert backend.bytes_used == 0


@pytest.mark.parametrize("kept", [False, True], ids=["encoded", "kept"])
def test_memory_judges_kept_entries_as_encoded_ones(
    kept: bool, key: Callable[[], str]
) -> None:
    from jinja_fragcache.backends.base import UNCLAIMED, WON
    from jinja_fragcache.entry import Entry

    b = MemoryBackend()
    counter = key()
    b.set(counter, b"7", None)
    fresh, stale, invalid = key(), key(), key()
    made = {
        fresh: Entry("body", time.time() + 60, "t.html", "d", {counter: "7"}),
        stale: Entry("body", time.time() - 1, "t.html", "d", {counter: "7"}),
        invalid: Entry("body", time.time() + 60, "t.html", "d", {counter: "6"}),
    }
    writes = made if kept else {k: e.encode() for k, e in made.items()}
    b.write_releasing(writes, 60, [], b"t")
    read = _claiming_read(key, [fresh, stale, invalid], [counter], cold=True)
    assert b.read_claiming(read).claims == [UNCLAIMED, WON, WON]


def _bytes_held(backend: MemoryBackend, keys: list[str]) -> int:
    """What *keys* count against max_bytes, by the contract: key and value."""
    found = backend.get_many(keys)
    return sum(len(k) + len(v) for k, v in zip(keys, found, strict=True) if v)


def test_memory_read_claiming_keeps_both_bounds_once_it_has_stored() -> None:
    # A read that creates two counters and claims a lock stores three keys,
    # and evicts once, after them: the oldest go, what it stored stays.
    from jinja_fragcache.backends.base import WON, ClaimingRead
    from jinja_fragcache.flow import new_version

    backend = MemoryBackend(max_entries=4)
    backend.set_many({"a": b"1", "b": b"2", "c": b"3"}, None)
    read = ClaimingRead(["e"], ["e:lock"], ["e:v", "n:v"], True, 30.0, new_version)
    claimed = backend.read_claiming(read)
    assert claimed.claims == [WON]
    assert len(backend) == 4
    made = ["e:v", "n:v", "e:lock"]
    assert backend.get_many(made) == [claimed.token] * 3
    assert backend.get_many(["a", "b", "c"]) == [None, None, b"3"]
    assert backend.bytes_used == _bytes_held(backend, ["c", *made])


def test_memory_write_releasing_keeps_both_bounds_and_counts_exactly() -> None:
    backend = MemoryBackend(max_entries=2)
    backend.set_many({"old": b"1", "lock": b"t"}, None)
    backend.write_releasing({"x": b"12", "y": b"345"}, 60, ["lock"], b"t")
    assert backend.get_many(["old", "lock", "x", "y"]) == [None, None, b"12", b"345"]
    assert backend.bytes_used == _bytes_held(backend, ["x", "y"])


def test_memory_claims_a_lock_that_expired_and_counts_it_once() -> None:
    from jinja_fragcache.backends.base import WON, ClaimingRead
    from jinja_fragcache.flow import new_version

    backend = MemoryBackend()
    backend.set("e:v", b"7", None)
    assert backend.add("e:lock", b"gone", 0.01)
    time.sleep(0.02)
    read = ClaimingRead(["e"], ["e:lock"], ["e:v"], True, 30.0, new_version)
    claimed = backend.read_claiming(read)
    assert claimed.claims == [WON]
    assert backend.get_many(["e:lock"]) == [claimed.token]
    assert backend.bytes_used == _bytes_held(backend, ["e:v", "e:lock"])
    backend.write_releasing({}, None, ["e:lock"], claimed.token)
    backend.delete("e:v")
    assert backend.bytes_used == 0


def test_memory_too_small_for_a_token_still_answers_the_read() -> None:
    # What cannot fit is not stored, and evicts nothing: the read still
    # hands out its token, as a counter's value and as its claim.
    from jinja_fragcache.backends.base import WON, ClaimingRead
    from jinja_fragcache.flow import new_version

    backend = MemoryBackend(max_bytes=8)
    backend.set("k", b"1", None)
    read = ClaimingRead(["entry"], ["entry:lock"], ["entry:v"], True, 30.0, new_version)
    claimed = backend.read_claiming(read)
    assert claimed.claims == [WON] and claimed.values == [None, claimed.token]
    assert backend.get_many(["entry:v", "entry:lock", "k"]) == [None, None, b"1"]
    assert backend.bytes_used == 2


def test_memory_incr_keeps_the_expiry() -> None:
    backend = MemoryBackend()
    backend.set("soon", b"1", 0.05)
    backend.set("ever", b"1", None)
    assert backend.incr("soon") == 2 and backend.incr("ever") == 2
    time.sleep(0.06)
    assert backend.get_many(["soon", "ever"]) == [None, b"2"]
    assert backend.bytes_used == len("ever") + 1


def test_memory_add_is_atomic_under_threads() -> None:
    backend = MemoryBackend()
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def contend() -> None:
        barrier.wait()
        wins.append(backend.add("lock", b"x", 60))

    in_threads(contend, 8)
    assert sorted(wins) == [False] * 7 + [True]


# -- RedisBackend ---------------------------------------------------------------------


def test_redis_get_many_is_one_round_trip(
    redis_backend: RedisBackend, key: Any
) -> None:
    keys = [key() for _ in range(50)]
    redis_backend.set_many(dict.fromkeys(keys, b"v"), 60)
    redis_backend.get_many(keys)  # its connection made (and named) first
    with trips() as sent:
        assert redis_backend.get_many(keys) == [b"v"] * 50
    assert sent == [b"MGET"]


def test_redis_accepts_a_decoding_client(redis_url: str, key: Any) -> None:
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    backend = RedisBackend(client)
    try:
        k = key()
        backend.set(k, "héllo".encode(), 60)
        assert backend.get_many([k]) == ["héllo".encode()]
        assert run(backend.aget_many([k]), backend) == ["héllo".encode()]
    finally:
        client.close()


def test_redis_down_fails_fast() -> None:
    import redis

    backend = RedisBackend.from_url(f"redis://127.0.0.1:{free_port()}/0")
    start = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        backend.get_many(["k"])
    with pytest.raises(redis.ConnectionError):
        run(backend.aget_many(["k"]), backend)
    assert time.monotonic() - start < 3
    backend.close()


def test_redis_info(redis_backend: RedisBackend) -> None:
    info = redis_backend.info()
    assert set(info) == {"keys", "memory_used", "memory_peak", "hits", "misses"}
    assert isinstance(info["memory_used"], int)
    assert info["memory_used"] > 0


# -- CachelibBackend ---------------------------------------------------------------------


def test_cachelib_refuses_caches_that_unpickle(tmp_path: Any) -> None:
    for shared in (
        RedisCache(host="127.0.0.1", port=1),
        FileSystemCache(str(tmp_path)),
    ):
        with pytest.raises(TypeError, match="unpickle"):
            CachelibBackend(shared)


def test_cachelib_none_means_never_expire() -> None:
    cache = SimpleCache(default_timeout=1)
    backend = CachelibBackend(cache)
    backend.set("k", b"v", None)
    time.sleep(1.1)
    assert backend.get_many(["k"]) == [b"v"]


# -- the two-trip miss: read_claiming and write_releasing -------------------------


@pytest.fixture(params=["memory", "redis", "redis-no-near"])
def claiming_backend(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return MemoryBackend()
    if request.param == "redis":
        return request.getfixturevalue("redis_backend")
    made = RedisBackend.from_url(request.getfixturevalue("redis_url"), near_cache=False)
    request.addfinalizer(made.close)
    return made


def _entry(versions: dict[str, str], expiry: float | None) -> bytes:
    from jinja_fragcache.entry import Entry

    return Entry("body", expiry, "t.html", "d", versions).encode()


def _claiming_read(
    key: Callable[[], str], entries: list[str], counters: list[str], cold: bool
) -> Any:
    from jinja_fragcache.backends.base import ClaimingRead
    from jinja_fragcache.flow import new_version

    locks = [k + ":lock" for k in entries]
    return ClaimingRead(entries, locks, counters, cold, 30.0, new_version)


def test_read_claiming_judges_claims_and_creates_as_the_protocol_says(
    claiming_backend: Any, key: Callable[[], str]
) -> None:
    from jinja_fragcache.backends.base import HELD, UNCLAIMED, WON

    b = claiming_backend
    counter, nested, made = key(), key(), key()
    b.set_many({counter: b"7", nested: b"3"}, None)
    fresh, stale, invalid, missing, held = (key() for _ in range(5))
    b.set_many(
        {
            fresh: _entry({counter: "7", nested: "3"}, time.time() + 60),
            stale: _entry({counter: "7"}, time.time() - 1),
            invalid: _entry({counter: "6"}, time.time() + 60),
            held: _entry({counter: "6"}, time.time() + 60),
        },
        60,
    )
    b.add(held + ":lock", b"someone", 30)
    entries = [fresh, stale, invalid, missing, held]
    read = _claiming_read(key, entries, [counter, made], cold=True)
    claimed = b.read_claiming(read)
    assert claimed.claims == [UNCLAIMED, WON, WON, WON, HELD]
    assert claimed.values[5] == b"7"
    created = claimed.values[6]
    assert created is not None and created.isdigit()  # made, unpredictable
    assert b.get_many([made]) == [created]
    assert claimed.nested == {nested: b"3"}  # read through the fresh header
    assert claimed.token
    locks = b.get_many([k + ":lock" for k in entries])
    assert locks == [None, claimed.token, claimed.token, claimed.token, b"someone"]

    # Without claim_cold, only the stale entry is claimed.
    again = _claiming_read(key, [key(), stale], [counter], cold=False)
    b.delete(stale + ":lock")
    assert b.read_claiming(again).claims == [UNCLAIMED, WON]

    # The write stores and releases only the locks this token holds.
    b.write_releasing(
        {missing: b"new"}, 60, [missing + ":lock", held + ":lock"], claimed.token
    )
    assert b.get_many([missing, missing + ":lock", held + ":lock"]) == [
        b"new",
        None,
        b"someone",
    ]


def test_read_claiming_again_finds_what_it_found(
    claiming_backend: Any, key: Callable[[], str]
) -> None:
    # On Redis without the near cache, a read that judged every entry fresh
    # lets the next read of the same keys only confirm the counters: what
    # it returns is what a judgement would, until a counter changes.
    from jinja_fragcache.backends.base import UNCLAIMED, WON

    b = claiming_backend
    counter, nested = key(), key()
    b.set_many({counter: b"7", nested: b"3"}, None)
    one, other = key(), key()
    stored = [
        _entry({counter: "7", nested: "3"}, time.time() + 60),
        _entry({counter: "7"}, None),
    ]
    b.set_many(dict(zip([one, other], stored, strict=True)), 60)
    read = _claiming_read(key, [one, other], [counter], cold=True)
    first, again = b.read_claiming(read), b.read_claiming(read)
    for claimed in (first, again, run(b.aread_claiming(read), b)):
        assert claimed.values == [*stored, b"7"]
        assert claimed.claims == [UNCLAIMED, UNCLAIMED]
        assert claimed.nested == {nested: b"3"}
    b.set(nested, b"4", None)
    claimed = b.read_claiming(read)
    assert claimed.claims == [WON, UNCLAIMED]
    assert claimed.nested == {nested: b"4"}


def test_read_claiming_async_is_the_same(
    claiming_backend: Any, key: Callable[[], str]
) -> None:
    from jinja_fragcache.backends.base import WON

    b = claiming_backend
    entry, counter = key(), key()
    read = _claiming_read(key, [entry], [counter], cold=True)
    claimed = run(b.aread_claiming(read), b)
    assert claimed.claims == [WON]
    run(b.awrite_releasing({entry: b"v"}, 60, [entry + ":lock"], claimed.token), b)
    assert b.get_many([entry, entry + ":lock"]) == [b"v", None]


def test_read_claiming_judges_expiry_by_this_process_clock(
    claiming_backend: Any, key: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fragment cache judges an entry by this process's clock, and so
    # does the claiming read: on Redis the script is given it (the server's
    # TIME, besides costing the script as much as a read, may be apart).
    from jinja_fragcache.backends.base import WON

    b = claiming_backend
    entry = key()
    b.set(entry, _entry({}, time.time() + 60), 300)
    later = time.time() + 120
    monkeypatch.setattr(time, "time", lambda: later)
    claimed = b.read_claiming(_claiming_read(key, [entry], [], cold=False))
    assert claimed.claims == [WON]  # stale by this clock, not by the server's


@pytest.mark.parametrize(
    ("stored", "claim"),
    [
        (b"not an entry", "won"),  # unreadable: cold
        (b"FC2 - d t", "won"),  # no end of header: cold
        (b"FC2 - d t k\nbody", "won"),  # a key without its version: cold
        (b"FC1 - d t\nbody", "won"),  # an older release's: cold
        (b"FC2 soon d t\nbody", "won"),  # an expiry that is no number: stale
        (b"FC2 - d t\nbody", "unclaimed"),  # never expires, nothing recorded
    ],
)
def test_read_claiming_judges_odd_entries_alike_everywhere(
    claiming_backend: Any, key: Callable[[], str], stored: bytes, claim: str
) -> None:
    from jinja_fragcache.backends.base import UNCLAIMED, WON

    b = claiming_backend
    entry = key()
    b.set(entry, stored, 60)
    claimed = b.read_claiming(_claiming_read(key, [entry], [], cold=True))
    assert claimed.claims == [WON if claim == "won" else UNCLAIMED]
    assert claimed.values == [stored]


@pytest.mark.parametrize("near_cache", [True, False], ids=["near", "no-near"])
def test_redis_scripts_load_again_after_script_flush(
    restartable_redis: tuple[str, Any], near_cache: bool
) -> None:
    # The scripts run by SHA1 (EVALSHA); a server that forgot them (SCRIPT
    # FLUSH, a restart, a failover) gets them again, sync and async.
    import asyncio

    import redis

    from jinja_fragcache import FragmentCache, FragmentRequest

    url, _ = restartable_redis
    backend = RedisBackend.from_url(url, near_cache=near_cache)
    admin = redis.Redis.from_url(url)
    cache = FragmentCache(backend, prefix="flushed")
    request = FragmentRequest("box", ("1",), 300)
    runner = asyncio.Runner()
    try:
        for round_ in range(3):
            admin.script_flush()
            assert cache.render(request, lambda r=round_: f"v{r}") == f"v{round_}"
            admin.script_flush()
            assert cache.render(request, lambda: "unused") == f"v{round_}"
            admin.script_flush()
            assert backend.incr(f"flushed:{uuid.uuid4().hex}", 1) is None
            admin.script_flush()
            cache.invalidate("box", "1")
            admin.script_flush()

            async def body(r: int = round_) -> str:
                return f"a{r}"

            assert runner.run(cache.render_async(request, body)) == f"a{round_}"
            admin.script_flush()
            cache.invalidate("box", "1")
        assert cache.statistics.as_dict()["box"]["errors"] == 0
    finally:
        runner.run(backend.aclose())
        runner.close()
        admin.close()
        backend.close()
