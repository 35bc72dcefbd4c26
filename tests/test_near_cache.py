"""The near cache (``jinja_fragcache.near``): hits with no round trip, kept
coherent by a real redis-server's client-side tracking, in this process and
across processes, through lost connections, restarts, forks and servers
that refuse tracking.  Round trips are counted with ``INFO commandstats``
on servers these tests start themselves."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from jinja_fragcache import FragmentCache, FragmentRequest, RedisBackend
from jinja_fragcache.backends.redis import TRACKING_NAME
from jinja_fragcache.keys import name_version_key
from jinja_fragcache.near import NearCache

from .support import free_port, trips

BOX = FragmentRequest("box", (), None)  # never expires on its own

#: Commands that are not cache traffic: the counting itself, health checks.
NOT_TRAFFIC = {"info", "ping", "client|list", "client|kill", "hello", "client|setinfo"}


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


def near_of(backend: RedisBackend) -> NearCache:
    assert backend.near is not None
    return backend.near


def commands(client: Any) -> dict[str, int]:
    """Calls per command so far, cache traffic only."""
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name.removeprefix("cmdstat_") not in NOT_TRAFFIC
    }


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


class Renderer:
    """Renders sync or async; async on one event loop for the whole test."""

    def __init__(self, use_async: bool) -> None:
        self.use_async = use_async
        self.runner = asyncio.Runner() if use_async else None

    def __call__(
        self, cache: FragmentCache, text: str, request: FragmentRequest = BOX
    ) -> str:
        if self.runner is None:
            return cache.render(request, lambda: text)

        async def body() -> str:
            return text

        return self.runner.run(cache.render_async(request, body))

    def close(self, *backends: RedisBackend) -> None:
        if self.runner is not None:
            for backend in backends:
                self.runner.run(backend.aclose())
            self.runner.close()
        for backend in backends:
            backend.close()


@pytest.fixture(params=[False, True], ids=["sync", "async"])
def renderer(request: pytest.FixtureRequest) -> Iterator[Renderer]:
    yield Renderer(bool(request.param))


@pytest.fixture
def own_redis(tmp_path: Any) -> Iterator[Callable[..., str]]:
    """Start a redis-server of this test's own, with extra arguments."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is needed: apt-get install redis-server")
    procs: list[subprocess.Popen[bytes]] = []

    def start(*extra: str) -> str:
        import redis

        port = free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "no", "--dir", str(tmp_path), *extra],
            stdout=subprocess.DEVNULL,
        )
        procs.append(proc)
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        try:
            wait_for(lambda: _pings(client), "redis-server to start", 10)
        finally:
            client.close()
        return url

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def _pings(client: Any) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def warm(cache: FragmentCache, render: Renderer, text: str) -> None:
    """Render until a render is answered from the near cache alone."""
    near = near_of(cache.backend)  # type: ignore[arg-type]
    wait_for(lambda: near.active, "tracking")
    for _ in range(200):
        assert render(cache, "unused") == text
        hits, misses = near.hits, near.misses
        assert render(cache, "unused") == text
        if near.misses == misses and near.hits > hits:
            return
        time.sleep(0.01)  # our own writes' echoes are still arriving
    pytest.fail("the near cache never warmed")


# -- what the server sends: checked, since the design relies on it ----------


def test_tracking_covers_writes_creation_and_expiry_by_anyone(
    restartable_redis: tuple[str, Any],
) -> None:
    import redis

    url, _ = restartable_redis
    backend = RedisBackend.from_url(url, near_cache_prefix="p:")
    other = redis.Redis.from_url(url)
    near = near_of(backend)
    try:
        assert backend.get_many(["p:warmup"]) == [None]
        wait_for(lambda: near.active, "tracking")
        # A missing key is kept as missing; its creation by another client
        # reaches us.
        assert backend.get_many(["p:a"]) == [None]
        assert near.peek("p:a") is not None
        other.set("p:a", b"1")
        wait_for(lambda: "p:a" not in near, "the creation's invalidation")
        assert backend.get_many(["p:a"]) == [b"1"]
        assert backend.get_many(["p:a"]) == [b"1"]
        hits = near.hits
        assert backend.get_many(["p:a"]) == [b"1"]
        assert near.hits == hits + 1
        # An expiry on the server is an invalidation too.
        other.set("p:e", b"1", px=100)
        assert backend.get_many(["p:e"]) == [b"1"]
        wait_for(lambda: "p:e" not in near, "the expiry's invalidation")
        # A key outside the prefix is read, never kept.
        other.set("q:x", b"1")
        assert backend.get_many(["q:x", "p:a"]) == [b"1", b"1"]
        assert "q:x" not in near
        # FLUSHALL: everything goes.
        other.flushall()
        wait_for(lambda: len(near) == 0, "the flush")
        assert backend.get_many(["p:a"]) == [None]
    finally:
        other.close()
        backend.close()


def test_a_value_is_never_served_past_its_server_side_expiry(
    own_redis: Callable[..., str],
) -> None:
    # Redis sends an expired key's invalidation only when it reclaims it,
    # which can be late; the near cache keeps the PTTL it read with it.
    import redis

    url = own_redis("--enable-debug-command", "local")
    backend = RedisBackend.from_url(url, near_cache_prefix="p:")
    other = redis.Redis.from_url(url)
    near = near_of(backend)
    try:
        backend.get_many(["p:warmup"])
        wait_for(lambda: near.active, "tracking")
        other.set("p:ttl", b"v", px=300)
        wait_for(
            lambda: backend.get_many(["p:ttl"]) == [b"v"] and "p:ttl" in near,
            "the value to be kept",
        )
        entry = near.peek("p:ttl")
        assert entry is not None
        assert entry[1] <= time.monotonic() + 0.3
        # Keep the server from reclaiming it: a key that expired but was not
        # reclaimed sends no invalidation.
        other.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", "0")
        time.sleep(0.35)
        assert "p:ttl" in near  # no invalidation came...
        assert backend.get_many(["p:ttl"]) == [None]  # ...and yet no stale read
        # A write's own TTL is kept the same way.
        backend.set("p:own", b"v", 0.05)
        time.sleep(0.06)
        assert backend.get_many(["p:own"]) == [None]
    finally:
        other.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", "1")
        other.close()
        backend.close()


# -- round trips, counted ------------------------------------------------------


def test_a_warm_hit_costs_no_command_and_an_invalidation_only_its_reads(
    restartable_redis: tuple[str, Any], renderer: Renderer
) -> None:
    import redis

    url, _ = restartable_redis
    backend = RedisBackend.from_url(url)
    elsewhere = RedisBackend.from_url(url, near_cache=False)
    cache = FragmentCache(backend, prefix="count")
    other = FragmentCache(elsewhere, prefix="count")
    client = redis.Redis.from_url(url)
    near = near_of(backend)
    try:
        assert renderer(cache, "old") == "old"
        warm(cache, renderer, "old")
        before = commands(client)
        for _ in range(5):
            assert renderer(cache, "unused") == "old"
        assert delta(before, commands(client)) == {}

        assert other.invalidate_all("box")
        wait_for(lambda: name_version_key("box", prefix="count") not in near, "push")
        misses, before = near.misses, commands(client)
        assert renderer(cache, "new") == "new"
        # The one read: the name counter is the only key that changed, and
        # the script that reads it reads the entry too, to claim its lock;
        # then the script that writes.
        assert near.misses == misses + 1
        sent = delta(before, commands(client))
        assert sent.get("fcall", 0) == 2
        assert sent.get("mget", 0) == 1  # the claiming script's own, no other
        warm(cache, renderer, "new")
        before = commands(client)
        assert renderer(cache, "unused") == "new"
        assert delta(before, commands(client)) == {}
    finally:
        client.close()
        renderer.close(backend, elsewhere)


def test_a_miss_sends_this_process_no_message_of_its_own_writes_when_sync(
    restartable_redis: tuple[str, Any], renderer: Renderer
) -> None:
    # A miss creates its variant's counter and writes its entry, both
    # tracked keys.  Sync, both go as plain commands on the connection that
    # registered the tracking with NOLOOP: no message comes back.  Async,
    # the lookup's asyncio connections are not that one: one message each.
    # Its lock, set and deleted by the same render, is no key a near cache
    # reads: no message either way.
    url, _ = restartable_redis
    backend = RedisBackend.from_url(url)
    cache = FragmentCache(backend, prefix="echo")
    near = near_of(backend)

    def applied() -> int:
        """The messages applied once all that was on its way has come."""
        time.sleep(0.1)
        backend.get_many(["echo:2:f:applies-what-waits"])  # a read applies them
        return near.invalidations

    try:
        warm(cache, renderer, renderer(cache, "first"))  # the name's counter too
        seen = applied()
        fresh = FragmentRequest("box", ("fresh",), None)
        assert renderer(cache, "body", fresh) == "body"
        echoed = 2 if renderer.use_async else 0
        wait_for(lambda: near.invalidations >= seen + echoed, "the miss's messages")
        assert applied() == seen + echoed
    finally:
        renderer.close(backend)


def test_a_miss_asks_no_counter_its_expiry(
    restartable_redis: tuple[str, Any], renderer: Renderer
) -> None:
    # Counters are only ever written without an expiry, so the claiming
    # read reports none for them without asking the server (a PTTL costs it
    # what a GET does, and a cold page of cards has a counter a card).  A
    # fresh process's miss finds its name's counter on the server, and,
    # sync, the variant's counter that its packet created ahead of the
    # script: neither is asked its PTTL.
    import redis

    url, _ = restartable_redis
    first = RedisBackend.from_url(url)
    second = RedisBackend.from_url(url)
    client = redis.Redis.from_url(url)
    try:
        assert renderer(FragmentCache(first, prefix="ttl"), "first") == "first"
        cache = FragmentCache(second, prefix="ttl")
        second.get_many(["ttl:2:f:starts-tracking"])
        wait_for(lambda: near_of(second).active, "tracking")
        before = commands(client)
        fresh = FragmentRequest("box", ("fresh",), 300)
        assert renderer(cache, "body", fresh) == "body"
        assert "pttl" not in delta(before, commands(client))
        assert client.pttl(cache.key_for("box", "fresh") + ":v") == -1
    finally:
        client.close()
        renderer.close(first, second)


def test_off_means_every_read_is_one_command(redis_url: str) -> None:
    backend = RedisBackend.from_url(redis_url, near_cache=False)
    assert backend.near is None
    cache = FragmentCache(backend, prefix="t" + os.urandom(6).hex())
    try:
        assert cache.render(BOX, lambda: "a") == "a"
        with trips() as sent:
            for _ in range(3):
                assert cache.render(BOX, lambda: "b") == "a"
        assert sent == [b"FCALL"] * 3  # the claiming read
    finally:
        backend.close()


# -- coherence -----------------------------------------------------------------


@pytest.mark.parametrize("parser", ["hiredis", "redis-py"])
def test_messages_read_with_the_subscribe_reply_are_not_applied_later(
    restartable_redis: tuple[str, Any], monkeypatch: pytest.MonkeyPatch, parser: str
) -> None:
    # A tracking thread slow to read its SUBSCRIBE reply (CPU or GIL
    # contention) gets the messages of writes made meanwhile in the same
    # recv(), into redis-py's buffer, where poll() does not see them.
    import redis

    from jinja_fragcache import tracking

    if parser == "redis-py":  # messages read as without hiredis installed
        made_messages = tracking.Messages.__init__

        def without_hiredis(messages: Any, *args: Any) -> None:
            made_messages(messages, *args)
            messages._reader = None

        monkeypatch.setattr(tracking.Messages, "__init__", without_hiredis)

    url, _ = restartable_redis
    backend = RedisBackend.from_url(url, near_cache_prefix="p:")
    other = redis.Redis.from_url(url)
    near = near_of(backend)
    made = near._connect

    def slow() -> Any:
        conn = made()
        send = conn.send_command

        def send_command(*args: Any, **kwargs: Any) -> None:
            send(*args, **kwargs)
            if args[0] == "SUBSCRIBE":
                time.sleep(0.3)

        conn.send_command = send_command  # type: ignore[method-assign]
        return conn

    monkeypatch.setattr(near, "_connect", slow)
    try:
        assert backend.get_many(["p:a"]) == [None]  # starts tracking
        wait_for(
            lambda: any(
                c["name"] == TRACKING_NAME and c["sub"] == "1"
                for c in other.client_list()
            ),
            "the subscription",
        )
        other.set("p:a", b"1")  # its message waits behind the SUBSCRIBE reply
        wait_for(lambda: near.active, "tracking")
        assert backend.get_many(["p:a", "p:b"]) == [b"1", None]
        other.set("p:b", b"2")
        wait_for(lambda: "p:b" not in near, "the invalidation")
        assert "p:a" in near  # only what changed after it was read is dropped
    finally:
        other.close()
        backend.close()


def test_this_process_sees_its_own_invalidation_on_the_next_render(
    restartable_redis: tuple[str, Any], renderer: Renderer
) -> None:
    url, _ = restartable_redis
    backend = RedisBackend.from_url(url)
    cache = FragmentCache(backend, prefix="own")
    near = near_of(backend)
    counter = name_version_key("box", prefix="own")
    try:
        assert renderer(cache, "v0") == "v0"
        for round_ in range(1, 7):
            warm(cache, renderer, f"v{round_ - 1}")
            held = near.peek(counter)
            assert held is not None and held[0] is not None
            if round_ % 2:
                # The write itself updates the local copy before it returns,
                # whatever the server's echo does later.
                if renderer.runner is None:
                    version = backend.incr(counter)
                else:
                    version = renderer.runner.run(backend.aincr(counter))
                assert version is not None
                assert near.peek(counter) is None
            else:
                assert cache.invalidate_all("box")
            # No pause: the very next render is new.
            assert renderer(cache, f"v{round_}") == f"v{round_}"
    finally:
        renderer.close(backend)


OTHER_PROCESS = """
import sys
from jinja_fragcache import FragmentCache, RedisBackend
cache = FragmentCache(RedisBackend.from_url({url!r}), prefix="two")
for line in sys.stdin:
    assert cache.invalidate_all("box")
    print("done", flush=True)
"""


def test_another_process_invalidation_shows_50_ms_after_it_returned(
    restartable_redis: tuple[str, Any], renderer: Renderer
) -> None:
    url, _ = restartable_redis
    backend = RedisBackend.from_url(url)
    cache = FragmentCache(backend, prefix="two")
    near = near_of(backend)
    other = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(OTHER_PROCESS.format(url=url))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert other.stdin is not None and other.stdout is not None
    try:
        assert renderer(cache, "v0") == "v0"
        for round_ in range(1, 6):
            warm(cache, renderer, f"v{round_ - 1}")  # hits make no round trip
            other.stdin.write("go\n")
            other.stdin.flush()
            assert other.stdout.readline().strip() == "done"
            time.sleep(0.05)
            hits = near.hits
            assert renderer(cache, f"v{round_}") == f"v{round_}"
            assert renderer(cache, "unused") == f"v{round_}"
            assert near.hits >= hits  # the near cache was in use throughout
    finally:
        other.stdin.close()
        other.wait(10)
        other.stdout.close()
        renderer.close(backend)


def test_a_killed_tracking_connection_empties_and_bypasses_until_it_is_back(
    restartable_redis: tuple[str, Any], renderer: Renderer
) -> None:
    import redis

    url, _ = restartable_redis
    backend = RedisBackend.from_url(url)
    cache = FragmentCache(backend, prefix="kill")
    client = redis.Redis.from_url(url)
    near = near_of(backend)
    counter = name_version_key("box", prefix="kill")
    try:
        for round_ in range(3):
            assert renderer(cache, f"v{round_}") == f"v{round_}"
            warm(cache, renderer, f"v{round_}")
            sessions = near.sessions
            [tracker] = [c for c in client.client_list() if c["name"] == TRACKING_NAME]
            client.client_kill_filter(_id=tracker["id"])
            # An invalidation while nobody tracks: its message is lost.
            client.incr(counter)
            assert renderer(cache, f"v{round_ + 1}") == f"v{round_ + 1}"
            wait_for(lambda s=sessions: near.sessions == s + 1, "a new session")
            warm(cache, renderer, f"v{round_ + 1}")
            assert renderer(cache, "unused") == f"v{round_ + 1}"
    finally:
        client.close()
        renderer.close(backend)


def test_a_restarted_server_brings_nothing_invalidated_back(
    restartable_redis: tuple[str, Any], renderer: Renderer
) -> None:
    url, (start, stop, _) = restartable_redis
    backend = RedisBackend.from_url(url)
    cache = FragmentCache(backend, prefix="restart", breaker_cooldown=0.05)
    near = near_of(backend)
    try:
        assert renderer(cache, "old") == "old"
        warm(cache, renderer, "old")
        sessions = near.sessions
        stop()
        start()  # empty: no persistence
        # Whatever the first renders meet (a dead pooled connection, the open
        # breaker), none serves what the server no longer has.
        for _ in range(20):
            assert renderer(cache, "new") == "new"
            time.sleep(0.01)
        wait_for(lambda: near.sessions > sessions and near.active, "tracking again")
        time.sleep(0.1)
        assert renderer(cache, "newer") in {"new", "newer"}
        settled = renderer(cache, "unused")
        warm(cache, renderer, settled)
    finally:
        renderer.close(backend)


def test_a_forked_child_tracks_on_its_own(restartable_redis: tuple[str, Any]) -> None:
    url, _ = restartable_redis
    backend = RedisBackend.from_url(url)
    cache = FragmentCache(backend, prefix="fork")
    near = near_of(backend)
    render = Renderer(False)
    assert render(cache, "old") == "old"
    warm(cache, render, "old")
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            os.close(to_child_w)
            os.close(to_parent_r)
            assert len(near) == 0 and not near.active  # nothing of the parent's
            assert near.sessions == 0
            assert render(cache, "unused") == "old"  # from the server
            wait_for(lambda: near.active, "the child's own tracking")
            assert near.sessions == 1
            warm(cache, render, "old")
            os.write(to_parent_w, b"warm\n")
            assert os.read(to_child_r, 10) == b"go"  # the parent invalidated
            time.sleep(0.05)
            assert render(cache, "new") == "new"
            code = 0
        finally:
            os._exit(code)
    os.close(to_child_r)
    os.close(to_parent_w)
    try:
        assert os.read(to_parent_r, 10) == b"warm\n"
        # The parent's tracking is untouched by the child's.
        assert near.active and near.sessions == 1
        assert cache.invalidate_all("box")
        os.write(to_child_w, b"go")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert render(cache, "parent") in {"new", "parent"}
    finally:
        os.close(to_child_w)
        os.close(to_parent_r)
        backend.close()


# -- bounds and refusals -------------------------------------------------------


def test_the_near_cache_stays_within_its_bytes_under_churn(
    restartable_redis: tuple[str, Any],
) -> None:
    import redis

    url, _ = restartable_redis
    bound = 64 * 1024
    backend = RedisBackend.from_url(
        url, near_cache_prefix="churn:", near_cache_bytes=bound
    )
    client = redis.Redis.from_url(url)
    near = near_of(backend)
    keys = [f"churn:{i}" for i in range(3000)]
    try:
        client.mset({k: os.urandom(random.randint(1, 900)) for k in keys})
        backend.get_many(keys[:1])
        wait_for(lambda: near.active, "tracking")
        for _ in range(300):
            batch = random.sample(keys, 20)
            values = backend.get_many(batch)
            assert all(v is not None for v in values)
            assert near.size <= bound
        assert 0 < len(near) < 3000
        # The most recent reads are the ones kept.
        backend.get_many(keys[-10:])
        hits = near.hits
        assert backend.get_many(keys[-10:]) == client.mget(keys[-10:])
        assert near.hits == hits + 10
        # A value larger than the whole bound is served, never kept.
        client.set("churn:big", b"x" * (bound + 1))
        assert backend.get_many(["churn:big"]) == [b"x" * (bound + 1)]
        assert "churn:big" not in near and near.size <= bound
    finally:
        client.close()
        backend.close()


def test_a_server_that_refuses_tracking_warns_once_and_works_without(
    own_redis: Callable[..., str],
    renderer: Renderer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = own_redis("--rename-command", "CLIENT", '""')
    backend = RedisBackend.from_url(url)
    cache = FragmentCache(backend, prefix="managed")
    near = near_of(backend)
    try:
        with caplog.at_level(logging.WARNING, "jinja_fragcache"):
            assert renderer(cache, "a") == "a"
            wait_for(lambda: near.refused, "the refusal")
            for _ in range(5):
                assert renderer(cache, "b") == "a"
            assert cache.invalidate_all("box")
            assert renderer(cache, "c") == "c"
        refusals = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(refusals) == 1
        assert refusals[0].levelno == logging.WARNING
        assert not near.active and near.hits == 0 and len(near) == 0
        assert cache.stats()["box"]["errors"] == 0
    finally:
        renderer.close(backend)


def test_closing_the_backend_ends_its_tracking(
    restartable_redis: tuple[str, Any],
) -> None:
    import redis

    url, _ = restartable_redis
    client = redis.Redis.from_url(url)
    backend = RedisBackend.from_url(url, near_cache_prefix="close:")
    try:
        backend.get_many(["close:a"])
        wait_for(lambda: near_of(backend).active, "tracking")

        def trackers() -> int:
            return sum(c["name"] == TRACKING_NAME for c in client.client_list())

        assert trackers() == 1
        backend.close()
        wait_for(lambda: trackers() == 0, "the tracking connection to close")
    finally:
        client.close()


def test_a_read_applies_waiting_invalidations_itself(
    restartable_redis: tuple[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # While the process reads, the tracking thread rests between batches
    # (it would wake for every write otherwise): a read that finds messages
    # waiting applies them and still answers from memory.
    import redis

    from jinja_fragcache import tracking

    url, _ = restartable_redis
    backend = RedisBackend.from_url(url, near_cache_prefix="r:")
    other = redis.Redis.from_url(url)
    near = near_of(backend)
    try:
        assert backend.get_many(["r:warmup"]) == [None]
        wait_for(lambda: near.active, "tracking")
        other.set("r:first", b"1")  # the thread applies it, then rests
        wait_for(lambda: near.invalidations >= 1, "the first message")
        monkeypatch.setattr(tracking, "REST", 30.0)
        other.set("r:again", b"1")  # keeps the thread resting from now on
        wait_for(lambda: near.invalidations >= 2, "the second message")
        other.set("r:a", b"1")
        other.set("r:b", b"1")
        assert backend.get_many(["r:a", "r:b"]) == [b"1", b"1"]
        assert backend.get_many(["r:a", "r:b"]) == [b"1", b"1"]
        hits, bypassed, seen = near.hits, near.bypassed, near.invalidations
        other.set("r:a", b"2")
        time.sleep(0.05)  # the message is here, and the thread rests
        assert near.invalidations == seen
        assert backend.get_many(["r:a", "r:b"]) == [b"2", b"1"]
        assert near.invalidations == seen + 1  # applied by that read
        assert near.bypassed == bypassed  # which did not bypass the store
        assert near.hits == hits + 1  # r:b, from memory
    finally:
        other.close()
        backend.close()


def test_a_read_of_waiting_messages_polls_once() -> None:
    # Every read of the near cache that finds messages waiting reads them:
    # one poll(2), one read of all that had arrived, and no poll(2) more to
    # learn that nothing else has.
    import socket

    from jinja_fragcache.tracking import Messages

    message = (
        b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n"
        b"*1\r\n$11\r\nfragcache:a\r\n"
    )
    ours, server = socket.socketpair()
    try:
        messages = Messages(None, ours)  # type: ignore[arg-type]
        polls: list[float] = []
        readable = messages._readable

        class Counted:
            def poll(self, timeout: float) -> Any:
                polls.append(timeout)
                return readable.poll(timeout)

        messages._readable = Counted()  # type: ignore[assignment]
        server.sendall(message * 3)
        found = messages.read()
        assert [m[2] for m in found] == [[b"fragcache:a"]] * 3
        assert polls == [0]
    finally:
        ours.close()
        server.close()


def test_a_message_read_in_part_keeps_the_store_unused_until_it_is_whole() -> None:
    # The tracking connection's bytes can end inside a message (the rest
    # still on its way): that invalidation is not applied yet, so nothing
    # may be answered from memory.  A socket pair stands in for the
    # connection's socket; the server's bytes are RESP2 as Redis sends them.
    import socket

    from jinja_fragcache.tracking import Messages

    message = (
        b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n"
        b"*2\r\n$11\r\nfragcache:a\r\n$11\r\nfragcache:b\r\n"
    )
    flush = b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*-1\r\n"
    pong = b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"
    ours, server = socket.socketpair()
    try:
        messages = Messages(None, ours)  # type: ignore[arg-type]
        assert messages.read() == []
        for cut in range(1, len(message)):
            server.sendall(message[:cut])
            assert messages.read() == []
            assert messages.partial, cut
            server.sendall(message[cut:] + pong)
            found = messages.read()
            assert [m[0] for m in found] == [b"message", b"pong"]
            assert found[0][2] == [b"fragcache:a", b"fragcache:b"]
            assert not messages.partial
        server.sendall(flush + message[:5])
        assert messages.read()[0][2] is None
        assert messages.partial
        server.sendall(message[5:])
        assert messages.read()[0][2] == [b"fragcache:a", b"fragcache:b"]

        # What the near cache makes of it, on the quiet socket: a read
        # answers from memory only while no message is in part.
        near = NearCache(lambda: None)  # type: ignore[arg-type,return-value]
        near._activate(ours.fileno())
        assert near.plan(["fragcache:a"]).values is not None
        near._invalidate(["fragcache:b"], partial=True)
        assert near.plan(["fragcache:a"]).values is None
        near._invalidate([], partial=False)
        assert near.plan(["fragcache:a"]).values is not None
    finally:
        ours.close()
        server.close()
