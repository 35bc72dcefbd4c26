"""Test helpers: rendering both ways, and backends that count or fail."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from jinja2 import Environment, Template

from jinja_fragcache.backends.base import Timeout, compound

T = TypeVar("T")


#: A hole or a live ``{% nocache %}`` marker: never in any output.
PLACEHOLDER = re.compile("\x00(?:[0-9a-fA-F]{6,32})?[0-9]+\x00")


def render(template: Template, **context: Any) -> str:
    """Render sync or async, as the template's environment is set up; no
    placeholder may reach the output."""
    output = render_unchecked(template, **context)
    assert not PLACEHOLDER.search(output), f"a placeholder leaked: {output!r}"
    return output


def render_unchecked(template: Template, **context: Any) -> str:
    """:func:`render`, for output that holds a placeholder's look-alike on
    purpose."""
    if template.environment.is_async:
        cache = getattr(template.environment, "fragment_cache", None)
        return run(template.render_async(**context), getattr(cache, "backend", None))
    return template.render(**context)


def run(coroutine: Awaitable[T], *backends: Any) -> T:
    """``asyncio.run``, then close what the backends opened for that loop.

    Each ``asyncio.run`` is a new event loop, and an asyncio Redis client
    belongs to one loop; a long-lived application closes it at shutdown.
    """

    async def main() -> T:
        try:
            return await coroutine
        finally:
            for backend in backends:
                while backend is not None and not hasattr(backend, "aclose"):
                    backend = getattr(backend, "inner", None)
                if backend is not None:
                    await backend.aclose()

    return asyncio.run(main())


SYNC_METHODS = (
    "get_many",
    "set",
    "set_many",
    "add",
    "add_many",
    "delete",
    "incr",
    # The optional two-trip miss (see jinja_fragcache.backends.base).
    "read_claiming",
    "write_releasing",
)
ASYNC_METHODS = {"a" + name: name for name in SYNC_METHODS}
COMPOUND = {"read_claiming", "write_releasing", "aread_claiming", "awrite_releasing"}


class CountingBackend:
    """Wraps a real backend and counts the calls that reach it.

    Async calls count under their sync name, so a test reads the same
    numbers whichever way the template rendered.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.called_async: Counter[bool] = Counter()  # True: an a… method
        self.keys_read: list[list[str]] = []

    def bind_prefix(self, prefix: str) -> None:
        # So a RedisBackend underneath keeps its near cache on, as it would
        # without the counting around it.
        if getattr(type(self.inner), "bind_prefix", None) is not None:
            self.inner.bind_prefix(prefix)

    @property
    def compound(self) -> bool:
        """Whether a miss takes the backend's two-trip path."""
        return compound(self.inner)

    @property
    def read(self) -> str:
        """The name of a lookup's first read on this backend."""
        return "read_claiming" if self.compound else "get_many"

    @property
    def write(self) -> str:
        """The name of a miss's write on this backend."""
        return "write_releasing" if self.compound else "set_many"

    def reset(self) -> None:
        self.calls.clear()
        self.called_async.clear()
        self.keys_read.clear()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if name not in SYNC_METHODS and name not in ASYNC_METHODS:
            return method  # close(), aclose(), info(): not cache traffic
        sync_name = ASYNC_METHODS.get(name, name)

        def counted(*args: Any) -> Any:
            self.calls[sync_name] += 1
            self.called_async[name in ASYNC_METHODS] += 1
            if sync_name == "get_many":
                self.keys_read.append(list(args[0]))
            elif sync_name == "read_claiming":
                self.keys_read.append([*args[0].entries, *args[0].counters])
            return method(*args)

        return counted


class BrokenBackend:
    """A backend whose server is unreachable: every call raises."""

    def __init__(self) -> None:
        self.attempts = 0
        self.broken = True
        self.inner: Any = None

    def _fail(self) -> None:
        # ``broken = False`` with an ``inner`` backend: the server came back.
        self.attempts += 1
        if self.broken:
            raise ConnectionError("connection refused")

    def __getattr__(self, name: str) -> Any:
        if name not in SYNC_METHODS and name not in ASYNC_METHODS:
            raise AttributeError(name)
        if name in COMPOUND and not hasattr(self.inner, name):
            raise AttributeError(name)  # as the server behind it would

        def call(*args: Any) -> Any:
            self._fail()
            return getattr(self.inner, name)(*args)

        async def acall(*args: Any) -> Any:
            self._fail()
            return await getattr(self.inner, name)(*args)

        return acall if name in ASYNC_METHODS else call


def free_port() -> int:
    """A TCP port on loopback that nothing listens on (for now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def entries(backend: Any, keys: Sequence[str]) -> Mapping[str, bytes | None]:
    return dict(zip(keys, backend.get_many(list(keys)), strict=True))


__all__ = [
    "BrokenBackend",
    "CountingBackend",
    "Timeout",
    "entries",
    "free_port",
    "render",
    "packets",
    "redis_on",
    "redis_server",
    "started",
    "run",
    "trip_commands",
    "trips",
    "wait_until",
]


ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def gunicorn(
    application: str, env: Mapping[str, str], ready_path: str = "/"
) -> Iterator[str]:
    """Serve a WSGI *application* with a real gunicorn on a free loopback
    port; yield its base URL once *ready_path* answers."""
    binary = shutil.which("gunicorn") or str(Path(sys.executable).with_name("gunicorn"))
    if not Path(binary).exists():
        pytest.fail('The server tests need gunicorn: pip install -e ".[test]"')
    port = free_port()
    process = subprocess.Popen(
        [binary, "--bind", f"127.0.0.1:{port}", "--workers", "1", application],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(base + ready_path, timeout=1).close()
                break
            # A first answer slower than the probe's timeout (a loaded
            # machine) is not a failure either: ask again until the deadline.
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"gunicorn did not serve {application}")
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(10)


def unreachable_redis_caches() -> dict[str, Any]:
    """A CACHES setting whose default cache is a Redis nobody listens on."""
    return {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
        }
    }


MakeEnv = Callable[..., Environment]


def template(env: Environment, source: str) -> Template:
    return env.from_string(env.globals["translate"](source))  # type: ignore[operator]


class Ticks:
    """``ticks.name`` counts how often it was read: ``{{ ticks.page }}``
    shows which render of a block this is."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __getattr__(self, name: str) -> int:
        self.counts[name] = self.counts.get(name, 0) + 1
        return self.counts[name]


class Tick:
    """Counts how often a block's body really rendered."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}

    def __call__(self, label: str) -> str:
        self.count[label] = self.count.get(label, 0) + 1
        return label


# -- round trips on real Redis connections -------------------------------------


def _sent_by_us(connection: Any) -> bool:
    """A lookup's packet: not on the tracking connection, and not sent by
    the tracking thread (which registers the tracking on a lookup
    connection, and keeps that connection alive)."""
    import threading

    from jinja_fragcache.backends.redis import TRACKING_NAME

    if threading.current_thread().name == TRACKER_THREAD:
        return False
    return getattr(connection, "client_name", None) != TRACKING_NAME


#: The name of the near cache's tracking thread.
TRACKER_THREAD = "jinja-fragcache-near-cache"


def _names(packed: Any) -> tuple[bytes, ...]:
    """The name of every command in a packet: RESP arrays of bulk strings,
    as redis-py and the backend's own wire pack them."""
    data = packed if isinstance(packed, bytes | str) else b"".join(packed)
    data = data.encode() if isinstance(data, str) else data
    names, at = [], 0
    while at < len(data):
        end = data.index(b"\r\n", at)
        assert data[at : at + 1] == b"*", data[at:]
        count, at = int(data[at + 1 : end]), end + 2
        for i in range(count):
            end = data.index(b"\r\n", at)
            size, at = int(data[at + 1 : end]), end + 2
            if i == 0:
                names.append(data[at : at + size])
            at += size + 2
    return tuple(names)


@contextmanager
def _sends(record: Callable[[Any, tuple[bytes, ...]], None]) -> Iterator[None]:
    """Call ``record(connection, its commands' names)`` for every packet
    redis-py sends meanwhile, sync or asyncio (a packet is a round trip)."""
    from redis import connection
    from redis.asyncio import connection as async_connection

    sync_class = connection.AbstractConnection
    async_class = async_connection.AbstractConnection
    sync_send, async_send = (
        sync_class.send_packed_command,
        async_class.send_packed_command,
    )

    def counted(self: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        record(self, _names(command))
        return sync_send(self, command, *args, **kwargs)

    async def acounted(self: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        record(self, _names(command))
        return await async_send(self, command, *args, **kwargs)

    sync_class.send_packed_command = counted  # type: ignore[method-assign]
    async_class.send_packed_command = acounted  # type: ignore[method-assign]
    try:
        yield
    finally:
        sync_class.send_packed_command = sync_send  # type: ignore[method-assign]
        async_class.send_packed_command = async_send  # type: ignore[method-assign]


@contextmanager
def trips() -> Iterator[list[bytes]]:
    """Every packet sent to Redis meanwhile (but the near cache's tracking
    connection's), its first command's name each."""
    sent: list[bytes] = []

    def record(connection: Any, names: tuple[bytes, ...]) -> None:
        if _sent_by_us(connection):
            sent.append(names[0])

    with _sends(record):
        yield sent


@contextmanager
def trip_commands() -> Iterator[list[tuple[bytes, ...]]]:
    """:func:`trips`, each packet as the names of all its commands."""
    sent: list[tuple[bytes, ...]] = []

    def record(connection: Any, names: tuple[bytes, ...]) -> None:
        if _sent_by_us(connection):
            sent.append(names)

    with _sends(record):
        yield sent


@contextmanager
def packets() -> Iterator[list[tuple[int, bytes]]]:
    """Every packet sent meanwhile: the port it went to and its first
    command's name (one packet is one round trip to that node)."""
    sent: list[tuple[int, bytes]] = []
    with _sends(
        lambda connection, names: sent.append((int(connection.port), names[0]))
    ):
        yield sent


def in_threads(target: Callable[[], object], count: int) -> None:
    """Run *target* in *count* threads at once, and wait for them all."""
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@contextmanager
def started(command: list[str], port: int, what: str, **options: Any) -> Iterator[None]:
    """Run *command* until the block ends, once it listens on *port*; its
    output goes to a file that a failure to start shows."""
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, **options
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        output.seek(0)
                        said = output.read().decode(errors="replace")[-2000:]
                        pytest.fail(f"{what} did not start: {said}")
                    time.sleep(0.05)
            yield
        finally:
            process.terminate()
            process.wait(10)


def redis_server(binary: str, port: int, folder: Path, *extra: str) -> list[str]:
    """The command line of a redis-server of a test's own: loopback TCP on
    *port*, nothing persisted (its files in *folder*)."""
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(folder),
        *extra,
    ]


def redis_on(port: int) -> Any:
    """A client of the redis-server a test started on *port*."""
    import redis

    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)


def near_quiet(backend: Any) -> None:
    """Wait until *backend*'s near cache (or that of the backend a
    :class:`CountingBackend` wraps), if it has one, may answer: its session
    started, a lookup connection registered for it (NOLOOP), and every
    message on its way applied.  Before that a sync miss goes to the
    server the echoed way, whose packets differ (rightly: a message in
    flight, or the tracking thread applying it, makes the near cache step
    aside), and whose echoes may reach the next render."""
    near = getattr(getattr(backend, "inner", backend), "near", None)
    if near is None:
        return
    wait_until(
        lambda: (
            near.active
            and near._registered is not None
            and not near._processing
            and near._catch_up()
        ),
        "the near cache's registered connection, and quiet",
        10,
    )


def wait_until(check: Callable[[], Any], what: str, seconds: float) -> None:
    """Until *check* is true, through the errors of a server not up yet;
    else fail saying *what* did not happen."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        except Exception as exc:  # a redis error: not up yet
            if "redis" not in type(exc).__module__:
                raise
        time.sleep(0.05)
    pytest.fail(f"{what} within {seconds} s")
