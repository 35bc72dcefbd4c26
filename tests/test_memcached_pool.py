"""Django's ``PyMemcacheCache`` over two memcached servers (``LOCATION`` a
list, pymemcache's ``HashClient``): the adapter's keys spread over both,
hits and invalidation stay right, and a dead server fails open.

The servers are this test's own, on free loopback ports.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.cache import caches
from django.template import engines

from django_bridge import (
    get_fragment_cache,
    invalidate_fragment,
    invalidate_fragments,
    invalidate_tags,
)
from django_bridge.backend import DjangoCacheBackend
from jinja_fragcache.cache import recording

from .support import free_port

ITEMS = list(range(40))
PAGE = (
    '<% for p in items %><% cache_fragment 300 card p tags="cards" %>'
    "[{{ p }}:{{ tick(p) }}]<% endcache_fragment %><% endfor %>"
)
EXPECTED = "".join(f"[{p}:{p}]" for p in ITEMS)


@dataclass
class Memcached:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def location(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> Any:
        from pymemcache.client.base import Client

        return Client(("127.0.0.1", self.port), connect_timeout=1, timeout=1)

    def stop(self) -> None:
        """Kill it (SIGKILL, by its PID): a crash, not a shutdown."""
        self.process.kill()
        self.process.wait(10)


def start_memcached(binary: str) -> Memcached:
    port = free_port()
    command = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "16"]
    if os.geteuid() == 0:
        command += ["-u", "root"]  # memcached will not run as root unasked
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 10
    while True:
        if process.poll() is not None:
            pytest.fail(f"memcached on port {port} exited ({process.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return Memcached(port, process)
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"memcached on port {port} did not start within 10 s")
            time.sleep(0.02)


@pytest.fixture
def servers(settings: Any) -> Iterator[list[Memcached]]:
    """Two memcached servers of this test's own, and the fragment cache on a
    PyMemcacheCache over both."""
    binary = shutil.which("memcached")
    if binary is None:
        pytest.fail(
            "The memcached pool tests need memcached: apt-get install memcached"
        )
    started: list[Memcached] = []
    try:
        started.append(start_memcached(binary))
        started.append(start_memcached(binary))
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
                "LOCATION": [server.location for server in started],
                "OPTIONS": {"connect_timeout": 0.5, "timeout": 0.5},
            }
        }
        settings.FRAGCACHE = {"KEY_PREFIX": "mp" + uuid.uuid4().hex[:10]}
        yield started
    finally:
        for server in started:
            if server.process.poll() is None:
                server.stop()


class Ticks:
    """``tick(p)`` counts the renders of card *p*."""

    def __init__(self) -> None:
        self.renders: list[int] = []

    def __call__(self, p: int) -> int:
        self.renders.append(p)
        return p

    def take(self) -> list[int]:
        renders, self.renders = sorted(self.renders), []
        return renders


def render(ticks: Ticks) -> str:
    template = engines["jinja2"].from_string(PAGE)
    return str(template.render({"items": ITEMS, "tick": ticks}))


def holders(servers: list[Memcached]) -> dict[int, int]:
    """Card -> the index of the server that holds its entry."""
    cache = get_fragment_cache()
    django_cache = caches["default"]
    found: dict[int, int] = {}
    clients = [server.client() for server in servers]
    try:
        for p in ITEMS:
            key = django_cache.make_key(cache.key_for("card", p))
            for index, client in enumerate(clients):
                if client.get(key) is not None:
                    assert p not in found, f"card {p} is on both servers"
                    found[p] = index
    finally:
        for client in clients:
            client.close()
    return found


def test_keys_spread_over_both_servers_and_hits_and_invalidation_hold(
    servers: list[Memcached],
) -> None:
    assert isinstance(get_fragment_cache().backend, DjangoCacheBackend)
    ticks = Ticks()
    assert render(ticks) == EXPECTED
    assert ticks.take() == ITEMS
    for server in servers:
        client = server.client()
        try:
            assert int(client.stats()[b"curr_items"]) > 0, server.location
        finally:
            client.close()
    placed = holders(servers)
    assert sorted(placed) == ITEMS  # every entry is on exactly one server
    on = [[p for p in ITEMS if placed[p] == i] for i in (0, 1)]
    assert on[0] and on[1], on

    assert render(ticks) == EXPECTED
    assert ticks.take() == []  # every card a hit, from either server

    one, other = on[0][0], on[1][0]
    assert invalidate_fragment("card", one) and invalidate_fragment("card", other)
    assert render(ticks) == EXPECTED
    assert ticks.take() == sorted([one, other])
    assert render(ticks) == EXPECTED
    assert ticks.take() == []

    assert invalidate_tags("cards")
    assert render(ticks) == EXPECTED
    assert ticks.take() == ITEMS
    assert render(ticks) == EXPECTED
    assert ticks.take() == []

    assert invalidate_fragments("card")
    assert render(ticks) == EXPECTED
    assert ticks.take() == ITEMS
    assert render(ticks) == EXPECTED
    assert ticks.take() == []


def test_a_dead_server_fails_its_fragments_open_and_the_page_renders(
    servers: list[Memcached],
) -> None:
    ticks = Ticks()
    assert render(ticks) == EXPECTED
    placed = holders(servers)
    ticks.take()
    dead = [p for p in ITEMS if placed[p] == 1]
    assert dead
    servers[1].stop()
    for _ in range(2):
        with recording() as lookups:
            assert render(ticks) == EXPECTED  # the page, whole and right
        assert set(dead) <= set(ticks.take())  # its cards rendered again
        outcome = dict(zip(ITEMS, (lookup.outcome for lookup in lookups), strict=True))
        # Failed open, not a miss: nothing was stored.  The cards on the
        # live server are uncached too while the breaker is open (one
        # get_many reads both servers, and the breaker is the backend's).
        assert {outcome[p] for p in dead} == {"uncached"}


def test_without_retries_the_survivor_takes_the_dead_servers_keys(
    servers: list[Memcached], settings: Any
) -> None:
    # pymemcache drops a server from the ring after retry_attempts failed
    # calls, each a breaker window apart (retry_attempts=2 by default: three
    # windows of uncached pages); with 0 it drops it at the first.
    settings.CACHES["default"]["OPTIONS"]["retry_attempts"] = 0
    ticks = Ticks()
    assert render(ticks) == EXPECTED
    placed = holders(servers)
    ticks.take()
    dead = [p for p in ITEMS if placed[p] == 1]
    servers[1].stop()
    cache = get_fragment_cache()
    cache.breaker.cooldown = 0.2  # the window, short for the test (5 s)
    assert render(ticks) == EXPECTED
    assert set(dead) <= set(ticks.take())
    time.sleep(0.3)
    assert render(ticks) == EXPECTED  # the dead cards miss on the survivor
    assert set(dead) <= set(ticks.take())
    assert render(ticks) == EXPECTED
    assert ticks.take() == []  # every card a hit again, all on one server
    assert sorted(holders(servers[:1])) == ITEMS
    assert invalidate_fragment("card", dead[0])
    assert render(ticks) == EXPECTED
    assert ticks.take() == [dead[0]]
    assert invalidate_tags("cards")
    assert render(ticks) == EXPECTED
    assert ticks.take() == ITEMS
