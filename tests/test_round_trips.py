"""Round trips per render, counted on real redis-server connections.

A round trip is one send of packed commands on a connection to the server
(a pipeline is one), counted where redis-py writes to the socket, sync and
asyncio.  The near cache's tracking connection is not counted: it only
listens.  Each case renders Jinja templates through the tags, with the near
cache on (the default) and off.  Sync with the near cache, a miss's writes
to tracked keys ride as plain ``SET`` commands ahead of its scripts, in the
same packets (the server echoes them to no one: see docs/design.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from jinja2 import DictLoader, Environment

from jinja_fragcache import FragmentCache, FragmentCacheExtension, RedisBackend

from .support import near_quiet, trip_commands, trips

PAGE = (
    "{% cache_fragment 300 box tags=['nav'] %}<box>{{ tick('box') }}"
    "{% endcache_fragment %}"
)
CARDS = (
    "{% cache_each 300 card p in products p.id tags=['cards'] %}"
    "[{{ tick(p.id) }}]{% endcache_each %}"
)
PRODUCTS = [{"id": i} for i in range(50)]


class Site:
    """One process's cache and templates on a Redis of the test's own."""

    def __init__(self, url: str, near_cache: bool, use_async: bool) -> None:
        self.backend = RedisBackend.from_url(url, near_cache=near_cache)
        self.cache = FragmentCache(self.backend, prefix="trips", lock_wait=0.5)
        self.env = Environment(
            loader=DictLoader({"page.html": PAGE, "cards.html": CARDS}),
            extensions=[FragmentCacheExtension],
            enable_async=use_async,
        )
        self.env.fragment_cache = self.cache  # type: ignore[attr-defined]
        self.runner = asyncio.Runner() if use_async else None
        self.renders: dict[Any, int] = {}

    def tick(self, label: Any) -> str:
        self.renders[label] = self.renders.get(label, 0) + 1
        return str(label)

    def render(self, name: str) -> str:
        template = self.env.get_template(name)
        context = {"tick": self.tick, "products": PRODUCTS}
        if self.runner is None:
            return template.render(context)
        return self.runner.run(template.render_async(context))

    def run(self, call: Callable[[], Any]) -> Any:
        result = call()
        if self.runner is not None and asyncio.iscoroutine(result):
            return self.runner.run(result)
        return result

    def settled(self, name: str) -> None:
        """Render until a hit sends nothing more than it will from now on:
        the near cache drops what this process wrote when the server echoes
        the write, so the first hits after a write may read once more."""
        if self.backend.near is None:
            self.render(name)
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with trips() as sent:
                self.render(name)
            if not sent:
                return
            time.sleep(0.01)
        pytest.fail("the near cache never answered a hit alone")

    def quiet(self) -> None:
        """Wait until the near cache may answer (see :func:`near_quiet`)."""
        near_quiet(self.backend)

    def close(self) -> None:
        if self.runner is not None:
            self.runner.run(self.backend.aclose())
            self.runner.close()
        self.backend.close()

    def assert_a_miss(self, sent: list[tuple[bytes, ...]]) -> None:
        """Two round trips: the claiming read's script, then the script that
        unlocks, behind plain SETs of the entries (no entry enters Lua).
        Without the near cache the first carries the MGET of the entries
        behind its script.  Sync with it, the first carries plain SETs
        ahead of its script too (the counters it creates); otherwise the
        script creates them."""
        assert len(sent) == 2, sent
        first, (*sets, script) = sent
        assert script == b"FCALL" and sets and set(sets) == {b"SET"}, sent
        if self.backend.near is None:
            assert first == (b"FCALL", b"MGET"), sent
        elif self.runner is not None:
            assert first == (b"FCALL",), sent
        else:
            *sets, script = first
            assert script == b"FCALL" and sets and set(sets) == {b"SET"}, sent


@pytest.fixture(params=[True, False], ids=["near", "no-near"])
def near_cache(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def site(
    restartable_redis: tuple[str, Any], near_cache: bool, enable_async: bool
) -> Iterator[Site]:
    url, _ = restartable_redis
    made = Site(url, near_cache, enable_async)
    # Connections open, scripts loaded: what a running site has.
    made.render("page.html")
    made.cache.invalidate_all("box")
    made.render("page.html")
    made.renders.clear()
    made.quiet()
    yield made
    made.close()


def test_a_hit_takes_one_round_trip_and_none_from_the_near_cache(site: Site) -> None:
    site.render("page.html")
    site.settled("page.html")
    with trips() as sent:
        assert site.render("page.html") == "<box>box"
    assert len(sent) == (0 if site.backend.near else 1), sent
    assert site.renders == {}


def test_a_cold_miss_takes_two_round_trips(site: Site) -> None:
    with trip_commands() as sent:
        assert site.render("cards.html") == "".join(f"[{i}]" for i in range(50))
    site.assert_a_miss(sent)


@pytest.mark.parametrize(
    ("invalidate", "its_trips"),
    [
        # The counter bump (its script sent whole: one trip even on a server
        # that has not seen it), then the entry it orphaned is deleted.
        (lambda cache: cache.invalidate("box"), [b"EVAL", b"DEL"]),
        (lambda cache: cache.invalidate_all("box"), [b"EVAL"]),
        (lambda cache: cache.invalidate_tags("nav"), [b"EVAL"]),
    ],
    ids=["invalidate", "invalidate_all", "invalidate_tags"],
)
def test_a_miss_after_an_invalidation_takes_two_round_trips(
    site: Site, invalidate: Callable[[FragmentCache], Any], its_trips: list[bytes]
) -> None:
    site.settled("page.html")
    with trips() as bump:
        assert invalidate(site.cache)
    assert bump == its_trips  # O(1): one counter
    site.quiet()  # the invalidation's own message applied
    with trip_commands() as sent:
        assert site.render("page.html") == "<box>box"
    assert site.renders == {"box": 1}
    site.assert_a_miss(sent)


def test_async_invalidation_then_miss_takes_three_round_trips_in_all(
    restartable_redis: tuple[str, Any], near_cache: bool
) -> None:
    url, _ = restartable_redis
    made = Site(url, near_cache, use_async=True)
    try:
        # Connections open (the lookup's and the client's), as on a site
        # that has invalidated before.
        made.render("page.html")
        assert made.run(lambda: made.cache.ainvalidate_tags("nav"))
        made.render("page.html")
        made.settled("page.html")
        with trips() as sent:
            assert made.run(lambda: made.cache.ainvalidate_tags("nav"))
            assert made.render("page.html") == "<box>box"
        assert sent[1:] == [b"FCALL", b"SET"], sent
        assert len(sent) == 3
    finally:
        made.close()


def test_a_page_of_fifty_cards_takes_two_round_trips_cold_and_one_warm(
    site: Site,
) -> None:
    with trip_commands() as cold:
        site.render("cards.html")
    site.assert_a_miss(cold)
    assert len(site.renders) == 50
    site.settled("cards.html")
    with trips() as warm:
        site.render("cards.html")
    assert len(warm) == (0 if site.backend.near else 1), warm
    assert set(site.renders.values()) == {1}

    assert site.cache.invalidate("card", 7)
    site.quiet()  # the invalidation's own message applied, as above
    with trip_commands() as one:
        site.render("cards.html")
    site.assert_a_miss(one)
    assert site.renders[7] == 2
    assert sum(site.renders.values()) == 51
