"""Hits answered from memory (``jinja_fragcache.memo``) on MemoryBackend:
no backend call while nothing changed, and never an answer that a read
would not give."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from jinja2 import DictLoader, Environment

from jinja_fragcache import (
    FragmentCache,
    FragmentCacheExtension,
    FragmentRequest,
    MemoryBackend,
)
from jinja_fragcache.holes import hole
from jinja_fragcache.recording import recording

from .support import PLACEHOLDER, CountingBackend, Tick

BOX = "{% cache_fragment 300 box uid %}<{{ tick('box') }}>{% endcache_fragment %}"
HOLED = (
    "{% cache_fragment 300 side %}[{{ tick('side') }}]"
    "{% nocache %}hello {{ user }}{% endnocache %}{% endcache_fragment %}"
)
NESTED = (
    "{% cache_fragment 300 outer %}({{ tick('outer') }}"
    "{% cache_fragment 300 inner %}{{ tick('inner') }}{% endcache_fragment %}"
    "){% endcache_fragment %}"
)


class Site:
    def __init__(self, use_async: bool = False, **options: Any) -> None:
        self.backend = CountingBackend(MemoryBackend())
        self.cache = FragmentCache(self.backend, prefix="memo", **options)
        self.env = Environment(
            loader=DictLoader({"box": BOX, "holed": HOLED, "nested": NESTED}),
            extensions=[FragmentCacheExtension],
            enable_async=use_async,
        )
        self.env.fragment_cache = self.cache  # type: ignore[attr-defined]
        self.tick = Tick()

    def render(self, name: str, **context: Any) -> str:
        template = self.env.get_template(name)
        context = {"tick": self.tick, "uid": 1, **context}
        if self.env.is_async:
            return asyncio.run(template.render_async(context))
        return template.render(context)

    def remembered(self, name: str, **context: Any) -> str:
        """Render twice (a miss, then a hit that is remembered)."""
        self.render(name, **context)
        return self.render(name, **context)


@pytest.fixture(params=[False, True], ids=["sync", "async"])
def site(request: pytest.FixtureRequest) -> Site:
    return Site(bool(request.param))


def test_a_remembered_hit_calls_no_backend(site: Site) -> None:
    assert site.remembered("box") == "<box>"
    site.backend.reset()
    with recording() as lookups:
        assert site.render("box") == "<box>"
    assert site.backend.calls == {}
    assert [(x.name, x.outcome) for x in lookups] == [("box", "hit")]
    assert site.cache.stats()["box"]["hits"] == 2
    assert site.tick.count == {"box": 1}
    # Another variant is another key.
    assert site.render("box", uid=2) == "<box>"
    assert site.tick.count == {"box": 2}


def test_any_change_to_the_backend_makes_it_read_again(site: Site) -> None:
    site.remembered("box")
    site.render("box", uid=2)  # a miss elsewhere writes
    site.backend.reset()
    assert site.render("box") == "<box>"
    assert site.backend.calls == {"get_many": 1}


@pytest.mark.parametrize(
    "invalidate",
    [
        lambda cache: cache.invalidate("box", 1),
        lambda cache: cache.invalidate_all("box"),
    ],
)
def test_an_invalidation_shows_on_the_very_next_render(
    site: Site, invalidate: Any
) -> None:
    site.remembered("box")
    assert invalidate(site.cache)
    assert site.render("box") == "<box>"
    assert site.tick.count == {"box": 2}


def test_an_invalidation_by_another_cache_on_the_same_backend_shows(
    site: Site,
) -> None:
    site.remembered("box")
    other = FragmentCache(site.backend, prefix="memo")
    assert other.invalidate_all("box")
    site.render("box")
    assert site.tick.count == {"box": 2}


def test_a_remembered_hit_is_not_served_past_its_soft_expiry() -> None:
    site = Site(stale_grace=30)
    site.env.loader = DictLoader({"box": BOX.replace("300", "0.2")})
    site.remembered("box")
    time.sleep(0.3)
    site.backend.reset()
    site.render("box")  # stale: read, and refreshed by this request
    assert site.backend.calls["get_many"] == 1
    assert site.tick.count == {"box": 2}


def test_an_inner_hit_from_memory_is_still_recorded_by_its_outer(
    site: Site,
) -> None:
    site.env.loader = DictLoader(
        {
            "inner": "{% cache_fragment 300 inner %}{{ tick('inner') }}"
            "{% endcache_fragment %}",
            "nested": NESTED,
        }
    )
    site.remembered("inner")  # the inner is remembered on its own
    site.backend.reset()
    assert site.render("nested") == "(outerinner)"  # the outer misses
    assert site.tick.count == {"inner": 1, "outer": 1}
    assert site.cache.invalidate_all("inner")
    assert site.render("nested") == "(outerinner)"
    assert site.tick.count == {"inner": 2, "outer": 2}


def test_a_remembered_hit_with_a_hole_fills_it_on_every_render() -> None:
    site = Site()
    assert site.remembered("holed", user="alice") == "[side]hello alice"
    site.backend.reset()
    assert site.render("holed", user="bob") == "[side]hello bob"
    assert site.render("holed", user="carol") == "[side]hello carol"
    assert site.backend.calls == {}
    assert site.tick.count == {"side": 1}


class Token:
    """A system hole: each request's own token, as the bridge's CSRF one."""

    def __init__(self) -> None:
        self.value = "t1"

    def punch(self, request: FragmentRequest, stored: str) -> str:
        return stored.replace(self.value, hole("token"))

    def fill(self, request: FragmentRequest, name: str) -> str:
        return self.value


def test_a_system_hole_is_filled_on_every_hit_never_served_raw() -> None:
    token = Token()
    site = Site(hole_filler=token)
    site.env.loader = DictLoader(
        {"box": "{% cache_fragment 300 box %}{{ token.value }}{% endcache_fragment %}"}
    )
    for value in ("t1", "t2", "t3", "t4"):
        token.value = value
        assert site.render("box", token=token) == value
    assert not PLACEHOLDER.search(site.render("box", token=token))


def test_no_memo_on_a_backend_that_counts_no_changes(redis_backend: Any) -> None:
    cache = FragmentCache(redis_backend, prefix="memo-" + str(time.time_ns()))
    assert cache.memo is None
    assert FragmentCache(MemoryBackend()).memo is not None


def test_no_memo_under_debug() -> None:
    site = Site(debug=True)
    site.remembered("box")
    site.backend.reset()
    site.render("box")
    assert site.backend.calls == {"get_many": 1}
