"""The near cache's registered connection (``jinja_fragcache.tracking``):
one lookup connection registers the tracking with ``NOLOOP``, so the
server echoes none of the sync miss's own writes, which this process
applies itself; other writers still reach it; losing that connection ends
the session.  On real redis-servers, with the writes of others made
between the steps a lookup takes."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import pytest

from jinja_fragcache import FragmentCache, FragmentRequest, RedisBackend
from jinja_fragcache.backends.redis import REGISTERED_NAME, TRACKING_NAME
from jinja_fragcache.keys import name_version_key
from jinja_fragcache.near import NearCache

from .support import trips
from .test_near_cache import Renderer, commands, delta, near_of, wait_for, warm

BOX = FragmentRequest("box", (), None)

#: A counter's value that another client created.
THEIRS = b"1234567"


@pytest.fixture(params=[False, True], ids=["sync", "async"])
def renderer(request: pytest.FixtureRequest) -> Iterator[Renderer]:
    yield Renderer(bool(request.param))


def clients(client: Any) -> dict[str, dict[str, Any]]:
    """The tracking connection and the registered one, by name (one
    process's: each test runs one near cache at a time)."""
    return {
        c["name"]: c
        for c in client.client_list()
        if c["name"] in (TRACKING_NAME, REGISTERED_NAME)
    }


def registered(client: Any) -> bool:
    """Whether the lookup connection tracks (``t``, broadcast ``B``) for
    the tracking connection, which does not track itself."""
    found = clients(client)
    if set(found) != {TRACKING_NAME, REGISTERED_NAME}:
        return False
    tracker, lookup = found[TRACKING_NAME], found[REGISTERED_NAME]
    return (
        "t" in lookup["flags"]
        and "B" in lookup["flags"]
        and lookup["redir"] == tracker["id"]
        and "t" not in tracker["flags"]
    )


class Opened(NamedTuple):
    """A backend with its near cache, a fragment cache on it, a plain client
    to look at the server with, and the near cache itself."""

    backend: RedisBackend
    cache: FragmentCache
    client: Any
    near: NearCache


@contextlib.contextmanager
def opened(url: str, prefix: str) -> Iterator[Opened]:
    """:class:`Opened` on the server at *url*, its keys under *prefix*;
    the backend and the client closed after."""
    import redis

    backend = RedisBackend.from_url(url)
    client = redis.Redis.from_url(url)
    try:
        cache = FragmentCache(backend, prefix=prefix)
        yield Opened(backend, cache, client, near_of(backend))
    finally:
        client.close()
        backend.close()


def settle(backend: RedisBackend, prefix: str) -> int:
    """The messages applied once all that was on its way has come."""
    time.sleep(0.1)
    backend.get_many([f"{prefix}:2:f:applies-what-waits"])  # applies them
    return near_of(backend).invalidations


# -- no echo -------------------------------------------------------------------


def test_one_lookup_connection_registers_the_tracking(
    restartable_redis: tuple[str, Any],
) -> None:
    url, _ = restartable_redis
    with opened(url, "reg") as (_, cache, client, near):
        assert cache.render(BOX, lambda: "a") == "a"
        # Registered first, then subscribed, then active.
        wait_for(lambda: near.active and registered(client), "the registration")
        assert near._registered is not None


def test_what_a_sync_miss_wrote_stays_near_and_answers_the_next_render(
    restartable_redis: tuple[str, Any], renderer: Renderer
) -> None:
    # No message comes back for the counter the miss created or the entry
    # it wrote, so both are still held when the next render reads them: it
    # sends nothing.  Async, the lookup's own connections are not the
    # registered one: both messages come, and the next render reads again.
    import redis

    url, _ = restartable_redis
    backend = RedisBackend.from_url(url)
    cache = FragmentCache(backend, prefix="kept")
    client = redis.Redis.from_url(url)
    try:
        warm(cache, renderer, renderer(cache, "first"))
        for n in range(3):
            seen = settle(backend, "kept")
            fresh = FragmentRequest("box", (f"v{n}",), None)
            assert renderer(cache, f"body {n}", fresh) == f"body {n}"
            echoed = settle(backend, "kept") - seen
            before = commands(client)
            assert renderer(cache, "unused", fresh) == f"body {n}"
            if renderer.use_async:
                assert echoed == 2
                assert delta(before, commands(client)) != {}
            else:
                assert echoed == 0
                assert delta(before, commands(client)) == {}
    finally:
        client.close()
        renderer.close(backend)


def test_another_clients_writes_to_what_this_process_wrote_still_reach_it(
    restartable_redis: tuple[str, Any], renderer: Renderer
) -> None:
    # The counter and the entry this process wrote unechoed are another
    # client's to change: each change reaches the next render.
    url, _ = restartable_redis
    backend = RedisBackend.from_url(url)
    elsewhere = RedisBackend.from_url(url, near_cache=False)
    cache = FragmentCache(backend, prefix="others")
    other = FragmentCache(elsewhere, prefix="others")
    try:
        for n in range(3):
            fresh = FragmentRequest("box", (f"v{n}",), None)
            assert renderer(cache, "old", fresh) == "old"
            warm_from(cache, renderer, fresh, "old")
            # Its variant's counter, created by this process's miss.
            assert other.invalidate("box", f"v{n}")
            time.sleep(0.05)
            assert renderer(cache, "new", fresh) == "new"
            warm_from(cache, renderer, fresh, "new")
            # Its entry, written by this process: overwritten elsewhere.
            entry = cache.key_for("box", f"v{n}")
            assert other.render(fresh, lambda: "x") == "new"  # a hit there
            written = elsewhere.get_many([entry])[0]
            assert written is not None
            elsewhere.set(entry, written.replace(b"new", b"put"), None)
            time.sleep(0.05)
            assert renderer(cache, "unused", fresh) == "put"
    finally:
        renderer.close(backend, elsewhere)


def warm_from(
    cache: FragmentCache, render: Renderer, request: FragmentRequest, text: str
) -> None:
    """Render *request* until it is answered from the near cache alone."""
    near = near_of(cache.backend)  # type: ignore[arg-type]
    for _ in range(200):
        hits, misses = near.hits, near.misses
        assert render(cache, "unused", request) == text
        if near.misses == misses and near.hits > hits:
            return
        time.sleep(0.01)
    pytest.fail("the near cache never warmed")


# -- what the lookup applies itself --------------------------------------------


def interpose(
    backend: RedisBackend,
    monkeypatch: pytest.MonkeyPatch,
    before: Callable[[], None] = lambda: None,
    after: Callable[[], None] = lambda: None,
) -> list[bytes]:
    """Run *before* and *after* around each exchange on the registered
    connection: another client's writes, landing between the steps of a
    lookup.  Returns the packets' first commands, as they go."""
    wire = backend._wire
    exchange_on = wire.exchange_on
    sent: list[bytes] = []

    def interposed(lent: Any, packed: bytes, count: int) -> list[Any]:
        before()
        sent.append(packed.split(b"\r\n")[2])
        replies = exchange_on(lent, packed, count)
        after()
        return replies

    monkeypatch.setattr(wire, "exchange_on", interposed)
    return sent


@pytest.mark.parametrize("when", ["before the lookup", "before its packet"])
def test_a_counter_another_client_created_first_is_never_held_as_the_token(
    restartable_redis: tuple[str, Any], monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    # The miss sends SET <counter> <token> NX for a counter the near cache
    # lacks; another client created it first, so the SET sets nothing.
    # Created before the lookup, its message already applied, the counter
    # is kept as the script read it; created while the lookup's packet is
    # on its way, its message may come after, so nothing is kept.  Never
    # the token.
    url, _ = restartable_redis
    with opened(url, "nx" + when[-6:]) as (backend, cache, client, near):
        counter = cache.key_for("box", "v") + ":v"
        tokens: list[bytes] = []
        warm(cache, Renderer(False), cache.render(BOX, lambda: "first"))

        def create() -> None:
            if not sent:  # the first packet: the claiming read's
                assert client.set(counter, THEIRS, nx=True)

        if when == "before the lookup":
            assert client.set(counter, THEIRS, nx=True)
            settle(backend, cache.prefix)
            sent = interpose(backend, monkeypatch)
        else:
            sent = interpose(backend, monkeypatch, before=create)
        from jinja_fragcache import lookup

        made = lookup.new_version

        def new_version() -> bytes:  # the tokens of the lookup's reads
            tokens.append(made())
            return tokens[-1]

        monkeypatch.setattr(lookup, "new_version", new_version)
        fresh = FragmentRequest("box", ("v",), None)
        assert cache.render(fresh, lambda: "body") == "body"
        assert sent[0] == b"SET"  # it was the lookup's to create
        assert client.get(counter) == THEIRS
        held = near.peek(counter)
        assert held is None or held[0] == THEIRS
        assert not any(held is not None and held[0] == t for t in tokens)
        if when == "before the lookup":
            assert held is not None
            # The entry records it, and reads back as a hit from memory.
            with trips() as reads:
                assert cache.render(fresh, lambda: "again") == "body"
            assert reads == []
        assert backend.get_many([counter]) == [THEIRS]


def test_a_write_elsewhere_between_the_script_and_its_apply_is_not_lost(
    restartable_redis: tuple[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another client changes the counter the read just created, and the
    # entry the write just stored, after the server answered and before
    # this process applies what it wrote; its message is applied first
    # (as a read in another thread would): what was written here is not
    # kept over it.
    url, _ = restartable_redis
    with opened(url, "race") as (backend, cache, client, near):
        fresh = FragmentRequest("box", ("v",), None)
        counter = cache.key_for("box", "v") + ":v"
        entry = cache.key_for("box", "v")
        warm(cache, Renderer(False), cache.render(BOX, lambda: "first"))
        steps: list[str] = []

        def elsewhere() -> None:
            step = "read" if not steps else "write"
            steps.append(step)
            seen = near.invalidations
            client.set(counter if step == "read" else entry, THEIRS)
            # Applied here, in this thread, as a read in another would.
            wait_for(
                lambda: near._catch_up() and near.invalidations > seen,
                "the message, applied",
            )

        interpose(backend, monkeypatch, after=elsewhere)
        assert cache.render(fresh, lambda: "body") == "body"
        assert steps == ["read", "write"]
        assert near.peek(counter) is None and near.peek(entry) is None
        assert backend.get_many([counter, entry]) == [THEIRS, THEIRS]


def test_a_read_in_flight_across_the_unechoed_creation_is_not_kept(
    restartable_redis: tuple[str, Any],
) -> None:
    # Another read of the counter, sent before this lookup created it and
    # answered "missing", completes after: nothing would drop what it keeps
    # (no message comes of the creation), so it must keep nothing.
    url, _ = restartable_redis
    with opened(url, "flight") as (backend, cache, client, near):
        fresh = FragmentRequest("box", ("v",), None)
        counter = cache.key_for("box", "v") + ":v"
        warm(cache, Renderer(False), cache.render(BOX, lambda: "first"))
        other = near.plan([counter])  # in flight: it read nothing yet
        assert other.missing == [0]
        assert cache.render(fresh, lambda: "body") == "body"
        made = client.get(counter)
        assert made is not None
        near.complete([counter], other, [(None, -2)])  # its stale answer
        held = near.peek(counter)
        assert held is None or held[0] == made
        assert backend.get_many([counter]) == [made]


# -- losing the registered connection -------------------------------------------


def test_a_killed_registered_connection_never_leaves_a_stale_render(
    restartable_redis: tuple[str, Any], renderer: Renderer
) -> None:
    # Killed, it takes the registration with it: no message comes any more,
    # for anyone's writes.  The next read sees its end and ends the session
    # (emptied, bypassed); a new one registers a new connection.
    import redis

    url, _ = restartable_redis
    backend = RedisBackend.from_url(url)
    cache = FragmentCache(backend, prefix="killreg")
    client = redis.Redis.from_url(url)
    near = near_of(backend)
    counter = name_version_key("box", prefix="killreg")
    try:
        for round_ in range(3):
            assert renderer(cache, f"v{round_}") == f"v{round_}"
            warm(cache, renderer, f"v{round_}")
            wait_for(lambda: registered(client), "the registration")
            sessions = near.sessions
            lookup = clients(client)[REGISTERED_NAME]
            client.client_kill_filter(_id=lookup["id"])
            client.incr(counter)  # nobody is told
            time.sleep(0.05)
            assert renderer(cache, f"v{round_ + 1}") == f"v{round_ + 1}"
            wait_for(lambda s=sessions: near.sessions == s + 1, "a new session")
            wait_for(lambda: registered(client), "a new registration")
            assert clients(client)[REGISTERED_NAME]["id"] != lookup["id"]
            warm(cache, renderer, f"v{round_ + 1}")
    finally:
        client.close()
        renderer.close(backend)


def test_a_registered_connection_lost_during_a_miss_ends_the_session_quietly(
    restartable_redis: tuple[str, Any],
) -> None:
    # Killed while the miss renders: its write finds it closed, ends the
    # session, and is sent again on another connection, as a lost idle
    # connection's command is: the render is cached, no error is counted.
    url, _ = restartable_redis
    with opened(url, "midway") as (backend, cache, client, near):
        fresh = FragmentRequest("box", ("v",), None)
        warm(cache, Renderer(False), cache.render(BOX, lambda: "first"))
        wait_for(lambda: registered(client), "the registration")
        sessions = near.sessions

        def body() -> str:
            lookup = clients(client)[REGISTERED_NAME]
            client.client_kill_filter(_id=lookup["id"])
            time.sleep(0.05)  # its end has reached this process
            return "body"

        assert cache.render(fresh, body) == "body"
        assert cache.stats()["box"]["errors"] == 0
        assert client.get(cache.key_for("box", "v")) is not None
        assert near.sessions == sessions and not near.active  # ended
        wait_for(lambda: near.sessions == sessions + 1, "a new session")
        assert cache.render(fresh, lambda: "again") == "body"


def test_a_late_failure_on_an_ended_sessions_connection_leaves_the_next_alone(
    restartable_redis: tuple[str, Any],
) -> None:
    # A lookup still holds the registered connection of a session that has
    # ended (the tracking connection was lost) while the next one began;
    # its command then fails.  That ends nothing but its own session: the
    # next one stays active, and answers.
    import redis

    url, _ = restartable_redis
    with opened(url, "late") as (backend, cache, client, near):
        warm(cache, Renderer(False), cache.render(BOX, lambda: "v0"))
        wait_for(lambda: registered(client), "the registration")
        sessions = near.sessions
        held = near.lend()  # a lookup in the middle of its miss
        assert held is not None
        client.client_kill_filter(_id=clients(client)[TRACKING_NAME]["id"])
        wait_for(lambda: near.sessions == sessions + 1, "the next session")
        wait_for(lambda: near.active, "the next session, active")
        held.lose(redis.ConnectionError("lost late"))
        held.give_back()
        assert near.active and near._registered not in (None, held)
        warm(cache, Renderer(False), "v0")
        assert near.sessions == sessions + 1


def test_an_error_reply_on_it_keeps_it_and_the_session(
    restartable_redis: tuple[str, Any],
) -> None:
    # The server refuses the miss's writes (out of memory): an error reply,
    # read whole, so the connection stays in step, is given back, and the
    # session goes on; the refused write keeps nothing near.
    url, _ = restartable_redis
    with opened(url, "refused") as (backend, cache, client, near):
        warm(cache, Renderer(False), cache.render(BOX, lambda: "first"))
        wait_for(lambda: registered(client), "the registration")
        sessions, lookup = near.sessions, clients(client)[REGISTERED_NAME]["id"]
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "1")
        try:
            fresh = FragmentRequest("box", ("v",), None)
            assert cache.render(fresh, lambda: "uncached") == "uncached"
        finally:
            client.config_set("maxmemory", "0")
        assert cache.stats()["box"]["errors"] == 1
        assert near.peek(cache.key_for("box", "v")) is None
        assert near.active and near.sessions == sessions
        # Given back, in step: the next miss takes it, unechoed.
        seen = settle(backend, "refused")
        fresh = FragmentRequest("box", ("w",), None)
        assert cache.render(fresh, lambda: "body") == "body"
        assert settle(backend, "refused") == seen
        assert clients(client)[REGISTERED_NAME]["id"] == lookup
        assert cache.render(fresh, lambda: "again") == "body"


def test_a_forked_child_registers_its_own_and_leaves_the_parents(
    restartable_redis: tuple[str, Any],
) -> None:

    url, _ = restartable_redis
    with opened(url, "forkreg") as (backend, cache, client, near):
        render = Renderer(False)
        assert render(cache, "old") == "old"
        warm(cache, render, "old")
        wait_for(lambda: registered(client), "the registration")
        ours = clients(client)[REGISTERED_NAME]["id"]
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports by its status
            code = 1
            try:
                assert near._registered is None and not near.active
                fresh = FragmentRequest("box", ("child",), None)
                assert cache.render(fresh, lambda: "child") == "child"
                wait_for(lambda: near._registered is not None, "its own")
                seen = settle(backend, "forkreg")
                fresh = FragmentRequest("box", ("child2",), None)
                assert cache.render(fresh, lambda: "child") == "child"
                assert settle(backend, "forkreg") == seen  # no echo there either
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The parent's registration is untouched: same connection, no echo.
        sessions, seen = near.sessions, settle(backend, "forkreg")
        fresh = FragmentRequest("box", ("parent",), None)
        assert cache.render(fresh, lambda: "parent") == "parent"
        assert settle(backend, "forkreg") == seen
        assert near.sessions == sessions and near.active
        assert clients(client)[REGISTERED_NAME]["id"] == ours


# -- where it cannot register ----------------------------------------------------


def test_a_registration_on_another_server_is_refused_by_run_id(
    restartable_redis: tuple[str, Any], tmp_path: Any, renderer: Renderer
) -> None:
    # Client ids are per server: the lookup connection reached another
    # server (a failover between the two connects), where a client holds
    # the tracking connection's id, so the redirect is accepted there.
    # The servers' run_id differ: the tracking connection registers itself
    # instead, and every write is echoed, as before.
    import shutil
    import socket
    import subprocess

    import redis

    from .support import free_port, redis_server

    url, _ = restartable_redis
    binary = shutil.which("redis-server")
    assert binary is not None
    port = free_port()
    elsewhere = subprocess.Popen(
        redis_server(binary, port, tmp_path), stdout=subprocess.DEVNULL
    )
    held: list[Any] = []
    backend = RedisBackend.from_url(url)
    plain = RedisBackend.from_url(url, near_cache=False)
    client = redis.Redis.from_url(url)
    try:
        wait_for(lambda: _listening(socket, port), "the other server", 10)
        # Every id the tracking connection may get exists over there too.
        for _ in range(200):
            conn = redis.Redis(port=port, single_connection_client=True)
            conn.ping()
            held.append(conn)
        made = backend._registered_connection

        def astray() -> Any:
            conn = made()
            conn.port = port
            return conn

        backend._registered_connection = astray  # type: ignore[method-assign]
        near = near_of(backend)
        near._register = astray
        cache = FragmentCache(backend, prefix="astray")
        other = FragmentCache(plain, prefix="astray")
        assert renderer(cache, "v0") == "v0"
        wait_for(lambda: near.active, "tracking")
        warm(cache, renderer, "v0")
        assert other.invalidate_all("box")
        time.sleep(0.05)
        assert renderer(cache, "v1") == "v1"
        assert near._registered is None
        assert "t" in clients(client)[TRACKING_NAME]["flags"]  # on itself
    finally:
        for conn in held:
            conn.close()
        client.close()
        renderer.close(backend, plain)
        elsewhere.terminate()
        elsewhere.wait(10)


def _listening(socket: Any, port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.1).close()
    except OSError:
        return False
    return True
