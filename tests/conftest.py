"""Shared fixtures: a redis-server of our own, and the backends."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jinja2 import DictLoader, Environment

from jinja_fragcache import FragmentCache, FragmentCacheExtension, MemoryBackend

from .support import CountingBackend, MakeEnv, Tick, free_port, redis_server

REDIS_URL_VARIABLE = "FRAGCACHE_TEST_REDIS_URL"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis the tests may write to.

    ``FRAGCACHE_TEST_REDIS_URL`` when set (never flushed: tests use unique
    keys), otherwise a ``redis-server`` of the session's own on a unix socket.
    """
    url = os.environ.get(REDIS_URL_VARIABLE)
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "The Redis tests need a redis-server: install it "
            f"(apt-get install redis-server) or set {REDIS_URL_VARIABLE}."
        )
    folder = tmp_path_factory.mktemp("redis")
    socket_path = folder / "redis.sock"
    process = subprocess.Popen(
        [
            binary,
            "--port",
            "0",
            "--unixsocket",
            str(socket_path),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for(socket_path, process)
        yield f"unix://{socket_path}"
    finally:
        process.terminate()
        process.wait(10)


def _wait_for(socket_path: Path, process: subprocess.Popen[bytes]) -> None:
    import redis

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"redis-server exited with status {process.returncode}")
        if socket_path.exists():
            client = redis.Redis(unix_socket_path=str(socket_path))
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                pass
            finally:
                client.close()
        time.sleep(0.05)
    pytest.fail("redis-server did not answer PING within 10 s")


@pytest.fixture
def redis_backend(redis_url: str) -> Iterator[Any]:
    from jinja_fragcache import RedisBackend

    backend = RedisBackend.from_url(redis_url)
    yield backend
    backend.close()


@pytest.fixture
def memory_backend() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def unique_prefix() -> str:
    """A key prefix of the test's own, so tests never need to flush a server."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="session")
def memcached_location() -> Iterator[str]:
    """``host:port`` of a memcached of the session's own.

    ``FRAGCACHE_TEST_MEMCACHED`` (``host:port``) when set, otherwise a
    ``memcached`` started on a free loopback port.
    """
    location = os.environ.get("FRAGCACHE_TEST_MEMCACHED")
    if location:
        yield location
        return
    binary = shutil.which("memcached")
    if binary is None:
        pytest.fail(
            "The memcached tests need memcached: install it (apt-get install "
            "memcached) or set FRAGCACHE_TEST_MEMCACHED=host:port."
        )
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [
            binary,
            "-l",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "0",
            "-u",
            "root",
            "-m",
            "64",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                pytest.fail(f"memcached exited with status {process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("memcached did not start within 10 s")
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def restartable_redis(tmp_path: Any) -> Iterator[tuple[str, Any]]:
    """A redis-server of this test's own, which the test may kill and restart."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is needed: apt-get install redis-server")
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        proc = subprocess.Popen(
            redis_server(binary, port, tmp_path),
            stdout=subprocess.DEVNULL,
        )
        procs.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                return
            except OSError:
                time.sleep(0.05)
        pytest.fail("redis-server did not start")

    def stop() -> None:
        procs[-1].terminate()
        procs[-1].wait(10)

    def freeze(frozen: bool) -> None:
        # SIGSTOP: a server that holds its data but answers nothing.
        procs[-1].send_signal(signal.SIGSTOP if frozen else signal.SIGCONT)

    start()
    yield f"redis://127.0.0.1:{port}/0", (start, stop, freeze)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            proc.wait(10)


# -- the Jinja matrix: sync and async, {% %} and <% %>, memory and Redis ----


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> CountingBackend:
    if request.param == "memory":
        return CountingBackend(MemoryBackend())
    return CountingBackend(request.getfixturevalue("redis_backend"))


@pytest.fixture
def cache(backend: CountingBackend, unique_prefix: str) -> FragmentCache:
    return FragmentCache(backend, prefix=unique_prefix, lock_wait=0.5)


@pytest.fixture(params=[False, True], ids=["sync", "async"])
def enable_async(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture(params=["{%", "<%"], ids=["braces", "angle"])
def delimiters(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_env(enable_async: bool, delimiters: str, cache: FragmentCache) -> MakeEnv:
    """Build an environment; templates are written with {% %} and translated."""

    def translate(source: str) -> str:
        if delimiters == "{%":
            return source
        return source.replace("{%", "<%").replace("%}", "%>")

    def make(templates: dict[str, str] | None = None, **options: Any) -> Environment:
        if delimiters == "<%":
            options.update(block_start_string="<%", block_end_string="%>")
        env = Environment(
            loader=DictLoader({k: translate(v) for k, v in (templates or {}).items()}),
            extensions=[FragmentCacheExtension],
            enable_async=enable_async,
            **options,
        )
        env.fragment_cache = cache  # type: ignore[attr-defined]
        env.globals["translate"] = translate
        return env

    return make


@pytest.fixture
def tick() -> Tick:
    return Tick()
