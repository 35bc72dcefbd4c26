"""The render path: stale serving, locks, fail-open, the breaker and stats."""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
import threading
import time
import uuid
from typing import Any

import pytest

from jinja_fragcache import FragmentCache, FragmentRequest, MemoryBackend
from jinja_fragcache.entry import Entry
from jinja_fragcache.keys import lock_key

from .support import BrokenBackend, CountingBackend, in_threads, run


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return MemoryBackend()
    return request.getfixturevalue("redis_backend")


def new_cache(backend: Any, **options: Any) -> FragmentCache:
    return FragmentCache(backend, prefix="t" + uuid.uuid4().hex[:12], **options)


class Body:
    """A fragment body that counts its renders and can be held back."""

    def __init__(self, text: str = "body") -> None:
        self.text = text
        self.renders = 0
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __call__(self) -> str:
        self.renders += 1
        self.started.set()
        assert self.release.wait(10)
        return f"{self.text}{self.renders}"


# -- stampede protection ------------------------------------------------------------


def test_expired_entry_is_served_stale_while_one_request_refreshes(
    backend: Any,
) -> None:
    cache = new_cache(backend, stale_grace=30)
    request = FragmentRequest("box", timeout=0.2)
    body = Body()
    assert cache.render(request, body) == "body1"
    time.sleep(0.3)

    body.release.clear()
    body.started.clear()
    refreshed: list[str] = []
    refresher = threading.Thread(
        target=lambda: refreshed.append(cache.render(request, body))
    )
    refresher.start()
    assert body.started.wait(5)
    # The lock is held: everyone else gets the stale copy at once.
    others = [cache.render(request, body) for _ in range(5)]
    assert others == ["body1"] * 5
    body.release.set()
    refresher.join(5)
    assert refreshed == ["body2"]
    assert cache.render(request, body) == "body2"
    assert body.renders == 2
    stats = cache.stats()["box"]
    assert stats["stale"] == 5
    assert stats["renders"] == 2


def test_concurrent_cold_misses_wait_for_the_one_renderer(backend: Any) -> None:
    cache = new_cache(backend, lock_wait=5)
    request = FragmentRequest("cold", timeout=300)
    body = Body()
    body.release.clear()
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.render(request, body)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    assert body.started.wait(5)
    time.sleep(0.2)  # the others are polling now
    body.release.set()
    for thread in threads:
        thread.join(10)
    assert results == ["body1"] * 4
    assert body.renders == 1


def test_waiting_is_bounded_when_the_lock_holder_died(backend: Any) -> None:
    cache = new_cache(backend, lock_wait=0.3, lock_timeout=60)
    request = FragmentRequest("orphan", timeout=300)
    backend.add(lock_key(cache.key_for("orphan")), b"dead", 60)
    body = Body()
    start = time.monotonic()
    assert cache.render(request, body) == "body1"
    assert 0.3 <= time.monotonic() - start < 3
    assert cache.render(request, body) == "body1"  # and its result was stored


def _rendered(
    cache: FragmentCache, request: FragmentRequest, body: Any, driver: str
) -> str:
    """*body* rendered through the sync or the async driver: the plain miss
    takes a path of its own in each."""
    if driver == "sync":
        return cache.render(request, body)

    async def render() -> str:
        return str(body())

    return run(cache.render_async(request, render), cache.backend)


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_store_filter_that_raises_releases_the_lock(
    backend: Any, driver: str
) -> None:
    def refuse(request: FragmentRequest, stored: str) -> bool:
        raise PermissionError(stored)

    cache = new_cache(backend, store_filter=refuse)
    request = FragmentRequest("refused", timeout=300)
    with pytest.raises(PermissionError):
        _rendered(cache, request, Body(), driver)
    assert backend.get_many([lock_key(cache.key_for("refused"))]) == [None]


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_failed_render_is_counted_as_a_miss(backend: Any, driver: str) -> None:
    cache = new_cache(backend)

    def broken() -> str:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        _rendered(cache, FragmentRequest("fails", timeout=300), broken, driver)
    counted = cache.stats()["fails"]
    assert (counted["fetches"], counted["misses"], counted["renders"]) == (1, 1, 0)


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_failed_render_releases_the_lock(backend: Any, driver: str) -> None:
    cache = new_cache(backend, lock_wait=5)
    request = FragmentRequest("fails", timeout=300)

    def broken() -> str:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        _rendered(cache, request, broken, driver)
    assert backend.get_many([lock_key(cache.key_for("fails"))]) == [None]
    start = time.monotonic()
    assert cache.render(request, Body()) == "body1"
    assert time.monotonic() - start < 1


def test_async_waiters_get_the_winners_render(backend: Any) -> None:
    cache = new_cache(backend, lock_wait=5)
    request = FragmentRequest("acold", timeout=300)
    renders = 0

    async def body() -> str:
        nonlocal renders
        renders += 1
        await asyncio.sleep(0.2)
        return "done"

    async def main() -> list[str]:
        return await asyncio.gather(
            *(cache.render_async(request, body) for _ in range(5))
        )

    assert run(main(), backend) == ["done"] * 5
    assert renders == 1


def test_stale_collection_items_are_refreshed_by_one_request(backend: Any) -> None:
    cache = new_cache(backend, stale_grace=30)
    requests = [FragmentRequest("card", (str(i),), timeout=0.2) for i in range(3)]
    rendered: list[int] = []

    def body(i: int) -> str:
        rendered.append(i)
        return f"card{i}"

    assert cache.render_many(requests, body) == ["card0", "card1", "card2"]
    time.sleep(0.3)
    backend.add(
        lock_key(cache.key_for("card", 1)), b"someone", 60
    )  # 1 is being refreshed
    assert cache.render_many(requests, body) == ["card0", "card1", "card2"]
    assert rendered == [0, 1, 2, 0, 2]


# -- fail open ----------------------------------------------------------------------


def test_a_dead_backend_renders_uncached_and_is_tried_once_per_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = BrokenBackend()
    cache = new_cache(broken, breaker_cooldown=0.3)
    request = FragmentRequest("box", timeout=300)
    body = Body()
    with caplog.at_level(logging.ERROR, "jinja_fragcache"):
        for _ in range(10):
            assert cache.render(request, body).startswith("body")
    assert body.renders == 10
    assert broken.attempts == 1
    assert "connection refused" in caplog.text
    assert cache.stats()["box"]["errors"] == 1

    broken.broken = False  # the server is back
    broken.inner = MemoryBackend()
    time.sleep(0.35)
    assert cache.render(request, body) == "body11"
    assert cache.render(request, body) == "body11"  # cached again
    assert not cache.breaker.is_open


def test_a_dead_backend_fails_open_under_async() -> None:
    broken = BrokenBackend()
    cache = new_cache(broken)

    async def body() -> str:
        return "fresh"

    request = FragmentRequest("box", timeout=300)
    assert asyncio.run(cache.render_async(request, body)) == "fresh"
    assert asyncio.run(cache.render_async(request, body)) == "fresh"
    assert broken.attempts == 1


def test_invalidation_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    cache = new_cache(BrokenBackend())
    with caplog.at_level(logging.ERROR, "jinja_fragcache"):
        assert cache.invalidate("box", 1) is False
        assert cache.invalidate_all("box") is False
        assert asyncio.run(cache.ainvalidate_tags("t")) is False
    assert "failed" in caplog.text


class RefusesInnerCounters:
    """A backend with the basic operations only, whose server refuses to
    create the counters of fragment ``inner`` (a request error: the breaker
    stays closed, and everything else is stored)."""

    def __init__(self) -> None:
        self.inner = MemoryBackend()

    def __getattr__(self, name: str) -> Any:
        if name in ("read_claiming", "write_releasing", "generation"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def add_many(self, mapping: dict[str, bytes], timeout: Any) -> list[bool]:
        if any("{inner}" in key for key in mapping):
            raise ValueError("refused")
        return self.inner.add_many(mapping, timeout)


def test_an_inner_whose_counters_could_not_be_made_keeps_its_outer_invalid() -> None:
    # The inner is not stored, and the outer records its counters with a
    # value no counter holds: the outer renders again on the next request.
    cache = new_cache(RefusesInnerCounters())
    outer = FragmentRequest("outer", timeout=300)
    inner = FragmentRequest("inner", timeout=300)
    rendered: list[str] = []

    def body() -> str:
        rendered.append("outer")
        return "(" + cache.render(inner, lambda: "inner") + ")"

    assert cache.render(outer, body) == "(inner)"
    assert cache.render(outer, body) == "(inner)"
    assert rendered == ["outer", "outer"]


@pytest.mark.parametrize(
    "garbage",
    [b"garbage", b"!" + pickle.dumps(ValueError("unpickled!")), b"FC1\n{}\n"],
)
def test_a_corrupt_or_foreign_entry_is_a_miss_and_is_replaced(
    backend: Any, garbage: bytes
) -> None:
    cache = new_cache(backend)
    request = FragmentRequest("box", timeout=300)
    backend.set(cache.key_for("box"), garbage, 60)
    body = Body()
    assert cache.render(request, body) == "body1"
    assert cache.render(request, body) == "body1"
    assert cache.stats()["box"]["errors"] == 1
    assert Entry.decode(backend.get_many([cache.key_for("box")])[0]).body == "body1"


def test_redis_going_down_and_coming_back(restartable_redis: tuple[str, Any]) -> None:
    from jinja_fragcache import RedisBackend

    url, (start, stop, _) = restartable_redis
    redis = RedisBackend.from_url(url)
    cache = new_cache(redis, breaker_cooldown=0.3)
    request = FragmentRequest("box", timeout=300)
    body = Body()
    try:
        assert cache.render(request, body) == "body1"
        stop()
        began = time.monotonic()
        assert [cache.render(request, body) for _ in range(20)] == [
            f"body{n}" for n in range(2, 22)
        ]
        assert time.monotonic() - began < 3  # one failed attempt, not twenty
        start()
        time.sleep(0.35)
        assert cache.render(request, body) == "body22"  # the server came back empty
        assert cache.render(request, body) == "body22"
    finally:
        redis.close()


# -- statistics ---------------------------------------------------------------------


def test_stats_are_exact_under_threads() -> None:
    cache = new_cache(MemoryBackend())
    request = FragmentRequest("hot", timeout=300)
    cache.render(request, lambda: "x")

    def hammer() -> None:
        for _ in range(200):
            cache.render(request, lambda: "x")

    in_threads(hammer, 8)
    stats = cache.stats()
    assert stats["hot"]["hits"] == 1600
    assert stats["hot"]["misses"] == 1
    assert stats["hot"]["renders"] == 1
    assert stats["hot"]["hit_rate"] == pytest.approx(1600 / 1601 * 100)


def test_misses_are_all_counted_across_threads() -> None:
    # Misses are queued, not locked, and added up by whoever reads the
    # statistics (or the queue itself when it is long): none is lost, and
    # the seconds of every one add up.
    from jinja_fragcache.stats import QUEUED_HITS

    cache = new_cache(MemoryBackend(max_entries=100_000))
    per_thread = QUEUED_HITS // 2 + 7
    names = iter(range(10**9))
    lock = threading.Lock()

    def misses() -> None:
        for _ in range(per_thread):
            with lock:
                variant = next(names)
            request = FragmentRequest("cold", (str(variant),), timeout=300)
            cache.render(request, lambda: "x")

    in_threads(misses, 4)
    stats = cache.stats()["cold"]
    assert stats["misses"] == stats["renders"] == stats["fetches"] == 4 * per_thread
    assert stats["hits"] == 0
    assert stats["avg_render_ms"] > 0 and stats["avg_fetch_ms"] > 0
    misses()  # queued, then reset: gone with the rest
    cache.statistics.reset()
    cache.render(FragmentRequest("cold", ("again",), timeout=300), lambda: "x")
    assert cache.stats()["cold"]["misses"] == 1


def test_fetched_hits_and_misses_are_all_counted_across_threads() -> None:
    # Hits that a read answered share the misses' queue (a miss carries its
    # render's seconds, a hit none): each is counted as what it was, past
    # the length at which the queue adds itself up.
    from jinja_fragcache.stats import QUEUED_HITS

    cache = new_cache(MemoryBackend(max_entries=100_000))
    per_thread = QUEUED_HITS // 2 + 7
    warm = FragmentRequest("mixed", ("warm",), timeout=300)
    cache.render(warm, lambda: "x")  # the one miss of the warm variant
    names = iter(range(10**9))
    lock = threading.Lock()

    def lookups() -> None:
        for _ in range(per_thread):
            with lock:
                variant = next(names)
            cache.render(FragmentRequest("mixed", (str(variant),), timeout=300), str)
            assert cache.render(warm, lambda: "not rendered") == "x"

    in_threads(lookups, 4)
    stats = cache.stats()["mixed"]
    assert stats["misses"] == stats["renders"] == 4 * per_thread + 1
    assert stats["hits"] == 4 * per_thread
    assert stats["fetches"] == 8 * per_thread + 1
    assert stats["hit_rate"] == pytest.approx(4 * per_thread / stats["fetches"] * 100)


class SlowBackend(CountingBackend):
    """A real memory backend behind a slow network."""

    def __getattr__(self, name: str) -> Any:
        method = super().__getattr__(name)

        def slow(*args: Any) -> Any:
            time.sleep(0.005)
            return method(*args)

        return slow


def test_fragments_cheaper_to_render_than_to_fetch_are_flagged() -> None:
    cache = new_cache(SlowBackend(MemoryBackend()))

    def expensive() -> str:
        time.sleep(0.05)
        return "big"

    for _ in range(3):
        cache.render(FragmentRequest("tiny", timeout=300), lambda: "x")
        cache.render(FragmentRequest("heavy", timeout=300), expensive)
    stats = cache.stats()
    assert stats["tiny"]["cheaper_to_render"] is True
    assert stats["heavy"]["cheaper_to_render"] is False
    assert stats["heavy"]["avg_render_ms"] >= 50
    assert stats["tiny"]["avg_fetch_ms"] >= 5


def test_a_server_that_never_answers_costs_one_short_timeout() -> None:
    from jinja_fragcache import RedisBackend

    silent = socket.socket()  # accepts connections, never replies
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    redis = RedisBackend.from_url(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
    cache = new_cache(redis)
    body = Body()
    try:
        began = time.monotonic()
        for _ in range(10):
            assert cache.render(FragmentRequest("box", timeout=300), body).startswith(
                "body"
            )
        assert time.monotonic() - began < 2  # one 0.5 s socket timeout, not ten
        assert body.renders == 10
        assert cache.breaker.is_open
    finally:
        redis.close()
        silent.close()


def test_fail_open_can_be_turned_off() -> None:
    cache = new_cache(BrokenBackend(), fail_open=False)
    with pytest.raises(ConnectionError):
        cache.render(FragmentRequest("box", timeout=300), Body())
    with pytest.raises(ConnectionError):
        run(cache.render_async(FragmentRequest("box", timeout=300), _async_body))
    assert cache.stats()["box"]["errors"] == 2


async def _async_body() -> str:
    return "x"


def test_last_outcome_says_how_a_render_was_answered() -> None:
    from jinja_fragcache.cache import last_outcome

    cache = new_cache(MemoryBackend(), stale_grace=30)
    request = FragmentRequest("box", timeout=0.2)
    nested = FragmentRequest("inner", timeout=300)

    def body_with_a_nested_hit() -> str:
        return cache.render(nested, lambda: "inner")

    cache.render(nested, lambda: "inner")
    cache.render(request, body_with_a_nested_hit)
    assert last_outcome() == "miss"  # the outer's, not the nested hit's
    cache.render(request, body_with_a_nested_hit)
    assert last_outcome() == "hit"
    time.sleep(0.3)
    cache.backend.add(lock_key(cache.key_for("box")), b"busy", 60)
    cache.render(request, body_with_a_nested_hit)
    assert last_outcome() == "stale"
    cache.render(FragmentRequest("live", timeout=0), lambda: "x")
    assert last_outcome() == "uncached"
