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
from jinja_fragcache.identity import MARK
from jinja_fragcache.recording import recording

from .support import PLACEHOLDER, CountingBackend, Tick, in_threads

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
    assert site.backend.calls == {site.backend.read: 1}


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
    assert site.backend.calls[site.backend.read] == 1
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


def test_no_memo_on_redis_without_its_near_cache(redis_url: str) -> None:
    from jinja_fragcache import RedisBackend

    site = Site()
    backend = RedisBackend.from_url(redis_url, near_cache=False)
    site.backend = CountingBackend(backend)
    site.cache = FragmentCache(site.backend, prefix="memo-" + str(time.time_ns()))
    site.env.fragment_cache = site.cache  # type: ignore[attr-defined]
    near = RedisBackend.from_url(redis_url)
    try:
        # No memo is kept, nor any memo key made, where no hit could be
        # remembered: its generation is None for good.
        assert site.cache.memo is None
        assert FragmentCache(near).memo is not None
        site.remembered("box")
        site.backend.reset()
        for _ in range(3):
            assert site.render("box") == "<box>"
        assert site.backend.calls == {site.backend.read: 3}
    finally:
        backend.close()
        near.close()


def test_no_memo_under_debug() -> None:
    site = Site(debug=True)
    site.remembered("box")
    site.backend.reset()
    site.render("box")
    assert site.backend.calls == {site.backend.read: 1}


# -- on Redis, through the near cache -------------------------------------------


def _near_site(url: str) -> tuple[Site, Any]:
    from jinja_fragcache import RedisBackend

    site = Site()
    backend = RedisBackend.from_url(url)
    site.backend = CountingBackend(backend)
    site.cache = FragmentCache(site.backend, prefix="memo")
    site.env.fragment_cache = site.cache  # type: ignore[attr-defined]
    return site, backend


def _settle(site: Site, name: str, **context: Any) -> None:
    """Render until a hit is answered from the memo: this process's own
    writes come back from the server as invalidations first."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        site.render(name, **context)
        site.backend.reset()
        site.render(name, **context)
        if not site.backend.calls:
            return
        time.sleep(0.01)
    pytest.fail("the memo never answered a hit")


def test_on_redis_a_remembered_hit_asks_not_even_the_near_cache(
    restartable_redis: tuple[str, Any],
) -> None:
    url, _ = restartable_redis
    site, backend = _near_site(url)
    try:
        _settle(site, "holed", user="alice")
        near = backend.near
        assert near is not None
        hits = near.hits
        assert site.render("holed", user="bob") == "[side]hello bob"
        assert site.backend.calls == {}
        assert near.hits == hits
    finally:
        backend.close()


def test_on_redis_an_invalidation_elsewhere_ends_the_memo_within_the_push(
    restartable_redis: tuple[str, Any],
) -> None:
    from jinja_fragcache import RedisBackend

    url, _ = restartable_redis
    site, backend = _near_site(url)
    elsewhere = RedisBackend.from_url(url, near_cache=False)
    try:
        _settle(site, "box")
        assert FragmentCache(elsewhere, prefix="memo").invalidate_all("box")
        deadline = time.monotonic() + 0.05
        while site.tick.count["box"] == 1 and time.monotonic() < deadline:
            site.render("box")
        time.sleep(max(0.0, deadline - time.monotonic()))
        site.render("box")
        assert site.tick.count["box"] == 2
    finally:
        elsewhere.close()
        backend.close()


def test_on_redis_a_lost_tracking_connection_ends_the_memo(
    restartable_redis: tuple[str, Any],
) -> None:
    import redis

    from jinja_fragcache.backends.redis import TRACKING_NAME

    url, _ = restartable_redis
    site, backend = _near_site(url)
    admin = redis.Redis.from_url(url)
    try:
        _settle(site, "box")
        near = backend.near
        assert near is not None
        sessions = near.sessions
        tracking = [c["id"] for c in admin.client_list() if c["name"] == TRACKING_NAME]
        assert tracking
        for client_id in tracking:
            admin.client_kill_filter(_id=client_id)
        # Tracking notices, empties the near cache and comes back on a new
        # connection: nothing from before may come from memory.
        deadline = time.monotonic() + 10
        while near.sessions == sessions:
            assert time.monotonic() < deadline, "tracking never noticed the kill"
            time.sleep(0.005)
        site.backend.reset()
        assert site.render("box") == "<box>"
        assert site.backend.calls
    finally:
        admin.close()
        backend.close()


# -- collections ---------------------------------------------------------------

CARDS = (
    "{% cache_each 300 card p in products p.id %}[{{ tick(p.id) }}]{% endcache_each %}"
)


def test_a_remembered_collection_calls_no_backend_and_counts_every_item(
    site: Site,
) -> None:
    site.env.loader = DictLoader({"cards": CARDS})
    products = [{"id": str(i)} for i in range(5)]
    assert site.remembered("cards", products=products) == "[0][1][2][3][4]"
    site.backend.reset()
    assert site.render("cards", products=products) == "[0][1][2][3][4]"
    assert site.backend.calls == {}
    assert site.cache.stats()["card"]["hits"] == 10
    # Another list is another key; one item invalidated renders alone.
    assert site.render("cards", products=products[:3]) == "[0][1][2]"
    assert site.cache.invalidate("card", "3")
    assert site.render("cards", products=products) == "[0][1][2][3][4]"
    assert site.tick.count == {"0": 1, "1": 1, "2": 1, "3": 2, "4": 1}


def test_a_collections_plain_values_key_the_memo_as_they_are_and_never_alias(
    site: Site,
) -> None:
    # A page's vary values, a tuple per item, key its memo as they are when
    # each holds ints and strs the key takes as they are (no conversion per
    # item on a remembered page); True is no 1, and a str the key escapes
    # goes the usual way, as for one fragment.
    site.env.loader = DictLoader(
        {
            "cards": "{% cache_each 300 card p in products p.id p.lang %}"
            "[{{ tick(p.id) }}]{% endcache_each %}"
        }
    )

    def renders(*ids: object) -> int:
        before = sum(site.tick.count.values())
        products = [{"id": i, "lang": "en"} for i in ids]
        site.render("cards", products=products)
        return sum(site.tick.count.values()) - before

    assert renders(1, 2) == 2
    assert renders(1, 2) == 0  # a hit, read, then remembered
    site.backend.reset()
    assert renders(1, 2) == renders(1, 2) == 0
    assert site.backend.calls == {}  # remembered: no read
    assert renders(True, 2) == 1  # item "True": cold
    assert renders(True, 2) == renders(1, 2) == renders("1", "2") == 0
    assert renders(MARK + "o:x") == 1
    assert renders(MARK + "o:x") == 0
    site.cache.invalidate("card", 2, "en")
    assert renders(1, 2) == 1


def test_a_collection_with_system_holes_is_filled_never_served_raw() -> None:
    token = Token()
    site = Site(hole_filler=token)
    site.env.loader = DictLoader(
        {
            "cards": "{% cache_each 300 card p in products p %}"
            "{{ token.value }}{% endcache_each %}"
        }
    )
    for value in ("t1", "t2", "t3"):
        token.value = value
        page = site.render("cards", products=[1, 2], token=token)
        assert page == value * 2
        assert not PLACEHOLDER.search(page)


def test_plain_vary_values_key_the_memo_as_they_are_and_never_alias(
    site: Site,
) -> None:
    # Ints and strs key remembered hits as they are, which must never make
    # two variants one: True == 1 in Python, but they are variants "True"
    # and "1"; a str the key escapes goes the usual way; and a converter
    # registered later decides again.
    def renders(**context: Any) -> int:
        before = site.tick.count.get("box", 0)
        site.render("box", **context)
        return site.tick.count.get("box", 0) - before

    class Thing:
        def __fragment_key__(self) -> str:
            return "x"

    assert renders(uid=1) == 1
    assert renders(uid=1) == renders(uid=1) == 0  # remembered
    assert renders(uid=True) == 1
    assert renders(uid=True) == renders(uid=1) == renders(uid="1") == 0
    assert renders(uid=Thing()) == 1
    assert renders(uid=Thing()) == renders(uid=Thing()) == 0
    assert renders(uid=MARK + "o:x") == 1  # a str, not the Thing
    assert renders(uid=MARK + "o:x") == 0
    assert renders(uid=1) == renders(uid=1) == 0  # remembered again
    site.cache.identity.register(int, lambda n: "every int")
    assert renders(uid=1) == 1  # the variant "every int", cold
    assert renders(uid=2) == renders(uid=1) == 0


class Keyed:
    def __fragment_key__(self) -> str:
        return "x"


@pytest.mark.parametrize(
    "uid",
    [7, "7", True, 2.5, "café", MARK + "o:x", Keyed(), [1, "a"], (1, "a")],
    ids=["int", "str", "bool", "float", "text", "escaped", "object", "list", "tuple"],
)
def test_a_miss_writes_where_key_for_and_invalidate_look(
    site: Site, uid: object
) -> None:
    # A miss that tried the memo takes its vary strings from the memo key
    # (memo.strings_of), whichever way that key holds the values.
    site.render("box", uid=uid)
    key = site.cache.key_for("box", uid)
    assert site.backend.get_many([key])[0] is not None
    site.render("box", uid=uid)
    assert site.tick.count == {"box": 1}
    site.cache.invalidate("box", uid)
    site.render("box", uid=uid)
    assert site.tick.count == {"box": 2}


def test_remembered_hits_are_all_counted_across_threads() -> None:
    # Remembered hits are queued, not locked, and added up by whoever reads
    # the statistics (or the queue itself when it is long): none is lost.

    from jinja_fragcache.stats import QUEUED_HITS

    site = Site()
    site.remembered("box")
    before = site.cache.statistics.as_dict()["box"]["hits"]
    per_thread = QUEUED_HITS // 2 + 7

    def hits() -> None:
        for _ in range(per_thread):
            site.render("box")

    in_threads(hits, 4)
    figures = site.cache.statistics.as_dict()["box"]
    assert figures["hits"] == before + 4 * per_thread
    assert site.tick.count == {"box": 1}
    hits()  # queued, then reset: gone with the rest
    site.cache.statistics.reset()
    site.render("box")
    assert site.cache.statistics.as_dict()["box"]["hits"] == 1


def test_a_tag_whose_memo_key_is_unhashable_gets_the_usual_error() -> None:
    # The memo key holds the timeout as given: a list cannot key a memo,
    # and the lookup, not the memo, says what is wrong, and where.
    from jinja2 import TemplateRuntimeError

    site = Site()
    site.env.loader.mapping["listed"] = (  # type: ignore[union-attr]
        "{% cache_fragment t box %}x{% endcache_fragment %}"
    )
    for _ in range(2):
        with pytest.raises(TemplateRuntimeError, match="timeout must be.*line 1"):
            site.render("listed", t=[300])
