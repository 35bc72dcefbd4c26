"""The connections a RedisBackend's lookups send on (``backends/wire.py``),
against a redis-server of each test's own: a restart, an error reply, a
frozen server and a fork."""

from __future__ import annotations

import os
from typing import Any

import pytest

from jinja_fragcache import FragmentCache, FragmentRequest, RedisBackend
from jinja_fragcache.backends.wire import pack


def accepted(url: str) -> int:
    """Connections the server has accepted so far (this one's included)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.info("stats")["total_connections_received"])
    finally:
        client.close()


def test_pack_is_resp() -> None:
    assert pack(("MGET", "a", b"\x00b", 12)) == (
        b"*4\r\n$4\r\nMGET\r\n$1\r\na\r\n$2\r\n\x00b\r\n$2\r\n12\r\n"
    )


def test_a_server_restart_costs_no_failed_read(
    restartable_redis: tuple[str, Any],
) -> None:
    url, (start, stop, _) = restartable_redis
    backend = RedisBackend.from_url(url, near_cache=False)
    try:
        backend.set("k", b"v", None)
        assert backend.get_many(["k"]) == [b"v"]
        stop()
        start()
        # The idle connection is the old server's: tried once more, anew.
        assert backend.get_many(["k"]) == [None]
    finally:
        backend.close()


def test_an_error_reply_keeps_the_connection(
    restartable_redis: tuple[str, Any],
) -> None:
    import redis

    url, _ = restartable_redis
    backend = RedisBackend.from_url(url, near_cache=False)
    cache = FragmentCache(backend, prefix="wire")
    try:
        box, other = FragmentRequest("box"), FragmentRequest("other")
        assert cache.render(box, lambda: "a") == "a"
        before = accepted(url)
        redis.Redis.from_url(url).script_flush()  # NOSCRIPT next, then EVAL
        assert cache.render(box, lambda: "b") == "a"
        assert cache.render(other, lambda: "c") == "c"
        # Only the two INFO clients and the SCRIPT FLUSH one are new.
        assert accepted(url) - before == 2
    finally:
        backend.close()


def test_a_timeout_is_not_retried(restartable_redis: tuple[str, Any]) -> None:
    import redis

    url, (_, _, freeze) = restartable_redis
    backend = RedisBackend.from_url(url, near_cache=False, socket_timeout=0.2)
    try:
        assert backend.get_many(["k"]) == [None]
        before = accepted(url)
        freeze(True)
        try:
            with pytest.raises(redis.TimeoutError):
                backend.get_many(["k"])
        finally:
            freeze(False)
        # The timed-out connection is closed; the next read makes one, and
        # none was made meanwhile (the server holds a retry's connect in
        # its backlog while frozen, and accepts it once it runs again).
        assert backend.get_many(["k"]) == [None]
        assert accepted(url) - before == 2  # this INFO's and the new read's
    finally:
        backend.close()


def test_a_forked_child_sends_on_connections_of_its_own(
    restartable_redis: tuple[str, Any],
) -> None:
    url, _ = restartable_redis
    backend = RedisBackend.from_url(url, near_cache=False)
    wire = backend._wire
    try:
        parent = wire.call("CLIENT", "ID")
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            try:
                os.write(write, b"%d" % wire.call("CLIENT", "ID"))
            finally:
                os._exit(0)
        os.close(write)
        child = int(os.read(read, 100))
        os.waitpid(pid, 0)
        os.close(read)
        assert child != parent
        assert wire.call("CLIENT", "ID") == parent  # the parent's, untouched
    finally:
        backend.close()


def test_threads_never_read_each_others_replies(redis_url: str) -> None:
    # Each connection serves one thread at a time: were two threads to
    # share one, a reply could reach the other (one user's fragment served
    # to another).  Eight threads each read their own key, over and over.
    import threading

    backend = RedisBackend.from_url(redis_url, near_cache=False)
    keys = [f"wire-thread:{os.urandom(6).hex()}:{n}" for n in range(8)]
    backend.set_many({key: key.encode() for key in keys}, 60)
    wrong: list[tuple[str, object]] = []
    start = threading.Barrier(len(keys))

    def read(key: str) -> None:
        start.wait()
        for _ in range(300):
            (value,) = backend.get_many([key])
            if value != key.encode():
                wrong.append((key, value))

    threads = [threading.Thread(target=read, args=(key,)) for key in keys]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert wrong == []
        assert len(backend._wire._idle) > 1  # the threads did overlap
    finally:
        backend.close()


def test_async_a_server_restart_costs_no_failed_read(
    restartable_redis: tuple[str, Any],
) -> None:
    import asyncio

    url, (start, stop, _) = restartable_redis
    backend = RedisBackend.from_url(url, near_cache=False)

    async def reads() -> None:
        await backend.aset("k", b"v", None)
        assert await backend.aget_many(["k"]) == [b"v"]
        stop()
        start()
        assert await backend.aget_many(["k"]) == [None]
        await backend.aclose()

    try:
        asyncio.run(reads())
    finally:
        backend.close()


def test_async_a_cancelled_read_leaves_no_reply_for_the_next(
    restartable_redis: tuple[str, Any],
) -> None:
    # A task cancelled while its reply is on the way: were its connection
    # kept, the next task would read that reply as its own.
    import asyncio

    url, (_, _, freeze) = restartable_redis
    backend = RedisBackend.from_url(url, near_cache=False)

    async def reads() -> None:
        await backend.aset_many({"mine": b"mine", "theirs": b"theirs"}, None)
        assert await backend.aget_many(["theirs"]) == [b"theirs"]
        freeze(True)
        try:
            waiting = asyncio.ensure_future(backend.aget_many(["theirs"]))
            await asyncio.sleep(0.1)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        finally:
            freeze(False)
        assert await backend.aget_many(["mine"]) == [b"mine"]
        await backend.aclose()

    try:
        asyncio.run(reads())
    finally:
        backend.close()


def test_a_pipeline_reads_every_reply_before_an_error_raises(
    restartable_redis: tuple[str, Any],
) -> None:
    # The first read sends its script and an MGET in one packet; a server
    # that lacks the script answers the MGET all the same.  Every reply is
    # read before NOSCRIPT raises, so the next command on that connection
    # gets its own reply, not the MGET's.
    import asyncio

    import redis

    url, _ = restartable_redis
    backend = RedisBackend.from_url(url, near_cache=False)
    runner = asyncio.Runner()
    try:
        backend.set("k", b"v", None)
        backend.set("other", b"w", None)
        unknown = ("EVALSHA", "0" * 40, 0)
        with pytest.raises(redis.exceptions.NoScriptError):
            backend._wire.pipeline(unknown, ("MGET", "k"))
        assert backend._wire.call("MGET", "other") == [b"w"]

        async def twice() -> list[Any]:
            wire = backend._awire
            with pytest.raises(redis.exceptions.NoScriptError):
                await wire.pipeline(unknown, ("MGET", "k"))
            return list(await wire.call("MGET", "other"))

        assert runner.run(twice()) == [b"w"]
    finally:
        runner.run(backend.aclose())
        runner.close()
        backend.close()


@pytest.mark.parametrize("parser", ["hiredis", "python"])
def test_replies_behind_the_first_are_taken_from_the_reader(
    redis_url: str, parser: str
) -> None:
    # One packet's replies come back together: the first is read by
    # read_response(), the others taken from hiredis's reader as they are
    # (an error reply among them raises once all are read, as it would
    # through read_response()).  redis-py's own parser reads them all.
    import redis
    from redis._parsers import _RESP2Parser

    from jinja_fragcache.backends.wire import Wire

    options: dict[str, Any] = {"protocol": 2}
    if parser == "python":
        options["parser_class"] = _RESP2Parser
    made: list[Any] = []

    def connect() -> Any:
        link = redis.ConnectionPool.from_url(redis_url, **options).make_connection()
        made.append(link)
        return link

    wire = Wire(connect, redis.ConnectionError, redis.ResponseError)
    try:
        key = "wire:" + os.urandom(6).hex()
        wire.call("SET", key, b"v")
        (link,) = made
        reads = 0
        real = link.read_response

        def read_response(*args: Any, **kwargs: Any) -> Any:
            nonlocal reads
            reads += 1
            return real(*args, **kwargs)

        link.read_response = read_response
        unknown = ("EVALSHA", "0" * 40, 0)
        with pytest.raises(redis.exceptions.NoScriptError):
            wire.pipeline(("GET", key), unknown, ("MGET", key, key))
        assert wire.pipeline(("GET", key), ("MGET", key, key)) == [b"v", [b"v", b"v"]]
        assert reads == (2 if parser == "hiredis" else 5)
    finally:
        wire.close()
