"""No invalidation is ever lost: made during an outage, it takes effect once
the backend is back, in this process and in others; made again later, it
clears what a request that read old data stored meanwhile."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from jinja_fragcache import FragmentCache, FragmentRequest, MemoryBackend
from jinja_fragcache.keys import name_version_key, tag_version_key, variant_version_key

from .support import in_threads

ENTRY = FragmentRequest("box", timeout=None)  # never expires on its own


def body(text: str) -> Any:
    return lambda: text


def test_an_invalidation_during_an_outage_takes_effect_once_the_server_is_back(
    restartable_redis: tuple[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    from jinja_fragcache import RedisBackend

    url, (_, _, freeze) = restartable_redis
    backend = RedisBackend.from_url(url)
    cache = FragmentCache(backend, prefix="inv", breaker_cooldown=60)
    try:
        assert cache.render(ENTRY, body("old")) == "old"
        freeze(True)
        with caplog.at_level(logging.ERROR, "jinja_fragcache"):
            assert cache.invalidate_all("box") is False
        assert "replayed once it answers" in caplog.text
        assert cache.stats()["(invalidations)"]["lost_invalidations"] == 1
        freeze(False)
        # Breaker still open: never read what the queued bump would clear.
        assert cache.render(ENTRY, body("new")) == "new"
        cache.breaker.open_until = 1.0  # the cooldown is over
        assert cache.render(ENTRY, body("newer")) == "newer"  # replayed, then read
        assert len(cache.pending) == 0
        assert cache.render(ENTRY, body("unused")) == "newer"
    finally:
        freeze(False)
        backend.close()


@pytest.mark.parametrize("kind", ["invalidate", "invalidate_all", "ainvalidate_tags"])
def test_another_process_sees_an_invalidation_made_during_an_outage(
    restartable_redis: tuple[str, Any], kind: str
) -> None:
    # Process A invalidates while the server is frozen, then renders nothing;
    # its background retry must reach process B.
    from jinja_fragcache import RedisBackend

    url, (_, _, freeze) = restartable_redis
    backend = RedisBackend.from_url(url)
    cache = FragmentCache(backend, prefix="two", breaker_cooldown=0.3)
    request = FragmentRequest("box", ("1",), None, ("t",))
    assert cache.render(request, body("old")) == "old"
    freeze(True)
    try:
        if kind == "invalidate":
            assert cache.invalidate("box", 1) is False
        elif kind == "invalidate_all":
            assert cache.invalidate_all("box") is False
        else:
            assert asyncio.run(cache.ainvalidate_tags("t")) is False
    finally:
        freeze(False)
    other = textwrap.dedent(
        f"""
        import time
        from jinja_fragcache import FragmentCache, FragmentRequest, RedisBackend
        cache = FragmentCache(RedisBackend.from_url({url!r}), prefix="two")
        request = FragmentRequest("box", ("1",), None, ("t",))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if cache.render(request, lambda: "new") == "new":
                print("new")
                break
            time.sleep(0.05)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", other], capture_output=True, text=True, timeout=30
    )
    assert result.stdout.strip() == "new", result.stderr
    backend.close()


def test_a_delayed_invalidation_clears_data_read_before_the_first() -> None:
    cache = FragmentCache(MemoryBackend(), prefix="late")
    request = FragmentRequest("list", (), None, ("products",))
    stale_data = "3 products"  # a view read this before the save...
    assert cache.invalidate_tags("products", again_after=0.2)  # ...the save
    assert cache.render(request, body(stale_data)) == stale_data  # stored late
    assert cache.render(request, body("4 products")) == stale_data
    time.sleep(0.5)
    assert cache.render(request, body("4 products")) == "4 products"


@pytest.mark.django_db(transaction=True)
def test_invalidate_on_save_invalidates_again_later(settings: Any) -> None:
    from django.contrib.auth.models import Group
    from django.template import engines

    from django_bridge import invalidate_on_save

    settings.FRAGCACHE = {"KEY_PREFIX": "save", "INVALIDATE_AGAIN_AFTER": 0.2}
    invalidate_on_save(Group, tags=lambda group: ["groups"])
    template = engines["django"].from_string(
        "{% load cache_tags %}{% cache_fragment None groups tags='groups' %}"
        "{{ names }}{% endcache_fragment %}"
    )
    before = "none"  # read before the save below
    Group.objects.create(name="editors")  # commits, invalidates
    assert template.render({"names": before}) == "none"  # stored late
    time.sleep(0.5)
    assert template.render({"names": "editors"}) == "editors"


def test_on_invalidated_hears_each_bump_only_once_it_is_stored(
    restartable_redis: tuple[str, Any],
) -> None:
    # The CDN purge hangs on this hook: a purge sent before the bump is
    # stored lets the edge refetch the old content.
    from jinja_fragcache import RedisBackend

    url, (_, _, freeze) = restartable_redis
    heard: list[list[str]] = []
    backend = RedisBackend.from_url(url)
    cache = FragmentCache(
        backend, prefix="hook", breaker_cooldown=60, on_invalidated=heard.append
    )
    key = cache.key_for("box", 1)
    try:
        assert cache.invalidate("box", 1)
        assert cache.invalidate_all("box")
        assert asyncio.run(cache.ainvalidate_tags("a", "b"))
        assert heard == [
            [variant_version_key(key)],
            [name_version_key("box", prefix="hook")],
            [tag_version_key(t, prefix="hook") for t in ("a", "b")],
        ]
        heard.clear()
        freeze(True)
        assert cache.invalidate_tags("c") is False
        assert heard == []  # not stored: nothing to purge yet
        freeze(False)
        cache.breaker.open_until = 1.0
        assert cache.pending.replay()
        assert heard == [[tag_version_key("c", prefix="hook")]]
    finally:
        freeze(False)
        backend.close()


def test_on_invalidated_hears_a_delayed_bump_again_and_never_breaks_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    heard: list[list[str]] = []

    def hook(counters: list[str]) -> None:
        heard.append(counters)
        raise RuntimeError("purge endpoint down")

    cache = FragmentCache(MemoryBackend(), prefix="later", on_invalidated=hook)
    with caplog.at_level(logging.ERROR, "jinja_fragcache"):
        assert cache.invalidate_tags("t", again_after=0.1) is True
    deadline = time.monotonic() + 5
    while len(heard) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert heard == [[tag_version_key("t", prefix="later")]] * 2
    assert "on_invalidated failed" in caplog.text


def test_versions_are_never_repeated_by_threads_or_a_forked_child() -> None:
    # Versions come from a buffer of the OS's random bytes: a forked child
    # must not hand out what its parent still holds, or a counter it
    # recreates could match what an old entry recorded.
    import os

    from jinja_fragcache.flow import new_version

    new_version()  # the buffer holds words now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        os.write(write, b" ".join(new_version() for _ in range(100)))
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {new_version() for _ in range(100)}
    assert len(child) == 100 and not child & parent

    seen: list[bytes] = []

    def draw() -> None:
        seen.extend(new_version() for _ in range(2000))

    in_threads(draw, 4)
    assert len(set(seen)) == len(seen) == 8000
    assert all(v.isdigit() and int(v) < 2**62 for v in seen)


@pytest.mark.parametrize("enable_async", [False, True], ids=["sync", "async"])
def test_concurrent_replays_make_each_failed_bump_once(enable_async: bool) -> None:
    # A failed bump waits in the queue; its thread, and every lookup while
    # it waits, replay it.  Replays at the same moment make it once: one
    # version step, one announcement (one CDN purge), and none is lost.
    class Slow(MemoryBackend):
        def incr(self, key: str, delta: int = 1) -> int | None:
            time.sleep(0.05)  # the bump in flight while the others replay
            return super().incr(key, delta)

        async def aincr(self, key: str, delta: int = 1) -> int | None:
            await asyncio.sleep(0.05)
            return super().incr(key, delta)

    heard: list[list[str]] = []
    cache = FragmentCache(Slow(), breaker_cooldown=60, on_invalidated=heard.append)
    counter = name_version_key("box", prefix=cache.prefix)
    cache.backend.set(counter, b"10", None)
    cache.pending.add_failed([counter])
    assert cache.pending.has_failed
    if enable_async:

        async def replays() -> list[bool]:
            return list(await asyncio.gather(*(cache._areplayed() for _ in range(8))))

        done = asyncio.run(replays())
        assert done.count(True) == 1  # the others saw it still in flight
    else:
        in_threads(cache.pending.replay, 8)
    assert cache.backend.get_many([counter]) == [b"11"]
    assert heard == [[counter]]
    assert not cache.pending.has_failed
    assert cache.pending.replay()  # nothing left
