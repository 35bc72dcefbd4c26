"""The Django bridge: one tag-semantics suite run for each engine, shared
keys across engines, the cache adapter, the Python API and the checks."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from io import StringIO
from typing import Any

import jinja2
import pytest
from django.core.checks import run_checks
from django.template import Context, TemplateSyntaxError, engines
from django.test import AsyncClient, Client

from django_bridge import (
    get_cache_stats,
    get_fragment_cache,
    invalidate_fragment,
    invalidate_fragments,
    invalidate_on_save,
    invalidate_tags,
)
from django_bridge.backend import DjangoCacheBackend
from django_bridge.selection import DjangoRedisBackend
from jinja_fragcache import make_fragment_key

from .support import PLACEHOLDER

Render = Callable[..., str]
SYNTAX_ERRORS = (TemplateSyntaxError, jinja2.TemplateSyntaxError)


@pytest.fixture(params=["locmem", "redis", "memcached"])
def cache_settings(request: pytest.FixtureRequest, settings: Any) -> str:
    """Point the fragment cache at a fresh prefix on LocMem, django-redis or
    memcached."""
    prefix = "dj" + uuid.uuid4().hex[:10]
    if request.param == "memcached":
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
                "LOCATION": request.getfixturevalue("memcached_location"),
            }
        }
        settings.FRAGCACHE = {"KEY_PREFIX": prefix}
    elif request.param == "redis":
        url = request.getfixturevalue("redis_url")
        settings.CACHES = {
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "fragments": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": url,
                "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
            },
        }
        settings.FRAGCACHE = {"CACHE": "fragments", "KEY_PREFIX": prefix}
    else:
        settings.FRAGCACHE = {"KEY_PREFIX": prefix}
    return prefix


@pytest.fixture(params=["jinja2", "dtl"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def compile_source(engine: str, source: str) -> Any:
    """Templates are written with {% %}; the Jinja2 engine here uses <% %>."""
    if engine == "dtl":
        return engines["django"].from_string("{% load cache_tags %}" + source)
    return engines["jinja2"].from_string(source.replace("{%", "<%").replace("%}", "%>"))


@pytest.fixture
def render(engine: str, cache_settings: str) -> Render:
    def render(source: str, **context: Any) -> str:
        output = str(compile_source(engine, source).render(context))
        assert not PLACEHOLDER.search(output), f"a placeholder leaked: {output!r}"
        return output

    return render


class Tick:
    """``{{ tick.label }}`` counts a real render in both engines."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}

    def __getitem__(self, label: str) -> str:
        raise KeyError(label)  # DTL tries item lookup first

    def __getattr__(self, label: str) -> str:
        if label.startswith("_"):
            raise AttributeError(label)
        self.count[label] = self.count.get(label, 0) + 1
        return label


# -- one suite, both engines ---------------------------------------------------------


def test_miss_then_hit(render: Render) -> None:
    tick = Tick()
    source = "{% cache_fragment 300 sidebar %}{{ tick.s }}{% endcache_fragment %}"
    assert render(source, tick=tick) == "s"
    assert render(source, tick=tick) == "s"
    assert tick.count == {"s": 1}


def test_names_and_vary_values(render: Render) -> None:
    tick = Tick()
    bare = "{% cache_fragment 300 card a b %}{{ tick.x }}{% endcache_fragment %}"
    quoted = '{% cache_fragment 300 "card" a, b %}{{ tick.y }}{% endcache_fragment %}'
    assert render(bare, tick=tick, a=42, b="en") == "x"
    assert render(quoted, tick=tick, a="42", b="en") == "x"
    assert render(quoted, tick=tick, a=43, b="en") == "y"


def test_timeouts_zero_and_none(render: Render) -> None:
    tick = Tick()
    never = "{% cache_fragment 0 live %}{{ tick.z }}{% endcache_fragment %}"
    forever = "{% cache_fragment None kept %}{{ tick.n }}{% endcache_fragment %}"
    computed = "{% cache_fragment t computed %}{{ tick.c }}{% endcache_fragment %}"
    for _ in range(2):
        render(never, tick=tick)
        render(forever, tick=tick)
        render(computed, tick=tick, t=0.5)
    assert tick.count == {"z": 2, "n": 1, "c": 1}


@pytest.mark.parametrize("timeout", ["-1", "'300'"])
def test_bad_literal_timeout_fails_at_compile_time(
    engine: str, cache_settings: str, timeout: str
) -> None:
    with pytest.raises(SYNTAX_ERRORS, match="timeout"):
        compile_source(
            engine, f"{{% cache_fragment {timeout} x %}}{{% endcache_fragment %}}"
        )


def test_bad_computed_timeout_names_the_value_and_line(render: Render) -> None:
    with pytest.raises(Exception, match=r"-5.*line 2|line 2.*-5") as info:
        render("\n{% cache_fragment t x %}b{% endcache_fragment %}", t=-5)
    assert "timeout" in str(info.value)


@pytest.mark.parametrize(
    "source",
    [
        "{% cache_fragment %}{% endcache_fragment %}",
        "{% cache_fragment 300 x bogus=1 %}{% endcache_fragment %}",
        "{% cache_fragment 300 x %}never closed",
        "{% cache_each 300 card p in items %}{% endcache_each %}",
    ],
)
def test_syntax_errors(engine: str, cache_settings: str, source: str) -> None:
    with pytest.raises(SYNTAX_ERRORS):
        compile_source(engine, source)


def test_if_condition(render: Render) -> None:
    tick = Tick()
    source = (
        "{% cache_fragment 300 menu if not staff %}{{ tick.m }}{% endcache_fragment %}"
    )
    for _ in range(2):
        render(source, tick=tick, staff=False)
        render(source, tick=tick, staff=True)
    assert tick.count == {"m": 3}


def test_tags_and_invalidation(render: Render) -> None:
    tick = Tick()
    card = '{% cache_fragment 300 card p tags="products" %}{{ tick.c }}{% endcache_fragment %}'
    render(card, tick=tick, p=1)
    render(card, tick=tick, p=2)
    assert invalidate_tags("products")
    render(card, tick=tick, p=1)
    assert invalidate_fragment("card", "1")  # a URL kwarg is a string
    render(card, tick=tick, p=1)
    render(card, tick=tick, p=2)
    assert invalidate_fragments("card")
    render(card, tick=tick, p=2)
    assert tick.count == {"c": 6}


def test_cache_each_shares_keys_with_a_loop(render: Render) -> None:
    tick = Tick()
    each = (
        "{% cache_each 300 card p in items p %}[{{ p }}{{ tick.e }}]{% endcache_each %}"
    )
    loop = "{% for p in items %}{% cache_fragment 300 card p %}[{{ p }}{{ tick.l }}]{% endcache_fragment %}{% endfor %}"
    assert render(each, items=[3, 1, 2], tick=tick) == "[3e][1e][2e]"
    assert render(loop, items=[1, 4], tick=tick) == "[1e][4l]"
    assert render(each, items=[4, 3], tick=tick) == "[4l][3e]"
    assert tick.count == {"e": 3, "l": 1}


def test_invalidate_tag_and_key_for(render: Render, cache_settings: str) -> None:
    tick = Tick()
    card = "{% cache_fragment 300 card p %}{{ tick.c }}{% endcache_fragment %}"
    render(card, tick=tick, p=7)
    assert render("[{% invalidate_fragment card p %}]", p=7) == "[]"
    render(card, tick=tick, p=7)
    assert tick.count == {"c": 2}
    key = render("{% cache_key_for card p %}", p=7)
    assert key == make_fragment_key("card", [7], prefix=cache_settings)


def test_russian_dolls(render: Render) -> None:
    tick = Tick()
    page = (
        "{% cache_fragment 300 page %}<{{ tick.page }}"
        "{% cache_fragment 300 price 1 %}{{ tick.price }}{% endcache_fragment %}"
        "{% cache_fragment 300 stock 1 %}{{ tick.stock }}{% endcache_fragment %}>"
        "{% endcache_fragment %}"
    )
    render(page, tick=tick)
    render(page, tick=tick)
    invalidate_fragment("price", 1)
    assert render(page, tick=tick) == "<pagepricestock>"
    assert tick.count == {"page": 2, "price": 2, "stock": 1}


# -- across engines --------------------------------------------------------------------


def test_one_entry_for_both_engines(cache_settings: str) -> None:
    jinja = engines["jinja2"].get_template("card.jinja")
    dtl = engines["django"].get_template("card.html")
    assert jinja.render({"pk": 1}).strip() == "card 1 by jinja"
    assert dtl.render({"pk": "1"}).strip() == "card 1 by jinja"  # a hit
    invalidate_fragment("card", 1)
    assert dtl.render({"pk": 1}).strip() == "card 1 by dtl"
    assert jinja.render({"pk": "1"}).strip() == "card 1 by dtl"


@pytest.mark.django_db
def test_views_sync_and_async(cache_settings: str) -> None:
    assert Client().get("/dtl/?pk=9").content.decode().strip() == "card 9 by dtl"

    async def fetch(path: str) -> str:
        response = await AsyncClient().get(path)
        return response.content.decode().strip()

    import asyncio

    assert asyncio.run(fetch("/async/jinja/?pk=9")) == "card 9 by dtl"
    assert asyncio.run(fetch("/async/dtl/?pk=8")) == "card 8 by dtl"
    assert asyncio.run(fetch("/async/jinja/?pk=8")) == "card 8 by dtl"


# -- Python API ---------------------------------------------------------------------------


def test_stats(
    engine: str, cache_settings: str, request: pytest.FixtureRequest
) -> None:
    source = "{% cache_fragment 300 statbox %}x{% endcache_fragment %}"
    for _ in range(3):
        compile_source(engine, source).render({})
    stats = get_cache_stats()
    assert stats["fragments"]["statbox"]["hits"] == 2
    assert stats["fragments"]["statbox"]["misses"] == 1
    assert stats["hit_rate"] == pytest.approx(200 / 3)
    if "redis" in request.node.callspec.id:
        assert isinstance(stats["keys"], int) and stats["keys"] > 0
        assert isinstance(stats["memory_used"], int)
    else:
        assert stats["keys"] is stats["memory_used"] is stats["memory_peak"] is None


def test_the_bridge_uses_the_configured_alias(
    settings: Any, cache_settings: str
) -> None:
    backend = get_fragment_cache().backend
    # On django-redis the bridge runs a core RedisBackend on the alias's pool.
    assert isinstance(backend, DjangoCacheBackend | DjangoRedisBackend)
    expected = "fragments" if "CACHE" in settings.FRAGCACHE else "default"
    assert backend.alias == expected
    settings.CACHES = {
        **settings.CACHES,
        "template_fragments": settings.CACHES["default"],
    }
    settings.FRAGCACHE = {"KEY_PREFIX": cache_settings}
    assert get_fragment_cache().backend.alias == "template_fragments"  # type: ignore[attr-defined]


@pytest.mark.django_db(transaction=True)
def test_invalidate_on_save_runs_after_commit(render: Render) -> None:
    from django.db import transaction

    from tests.djangoapp.models import Product

    invalidate_on_save(Product, tags=lambda p: ["products", f"product-{p.pk}"])
    tick = Tick()
    card = '{% cache_fragment 300 card p tags="products" %}{{ tick.c }}{% endcache_fragment %}'
    render(card, tick=tick, p=1)
    with transaction.atomic():
        Product.objects.create(name="cup")
        render(card, tick=tick, p=1)  # not committed yet: still cached
    render(card, tick=tick, p=1)
    assert tick.count == {"c": 2}


# -- system checks ------------------------------------------------------------------------


def check_ids() -> set[str]:
    return {
        message.id for message in run_checks() if message.id.startswith("fragcache")
    }


@pytest.mark.parametrize(
    ("backend", "options", "warned"),
    [
        ("django_redis.cache.RedisCache", {}, True),
        ("django_redis.cache.RedisCache", {"SOCKET_TIMEOUT": 0.5}, False),
        (
            "django_redis.cache.RedisCache",
            {"CONNECTION_POOL_KWARGS": {"socket_timeout": 1}},
            False,
        ),
        ("django.core.cache.backends.redis.RedisCache", {}, True),
        ("django.core.cache.backends.redis.RedisCache", {"socket_timeout": 1}, False),
        ("django.core.cache.backends.memcached.PyMemcacheCache", {}, True),
        ("django.core.cache.backends.memcached.PyMemcacheCache", {"timeout": 1}, False),
        ("django.core.cache.backends.db.DatabaseCache", {}, False),
    ],
)
def test_a_cache_with_no_socket_timeout_is_warned_about(
    settings: Any, backend: str, options: dict[str, Any], warned: bool
) -> None:
    settings.SILENCED_SYSTEM_CHECKS = []
    settings.CACHES = {
        "default": {"BACKEND": backend, "LOCATION": "x", "OPTIONS": options}
    }
    settings.DEBUG = True
    assert ("fragcache.W002" in check_ids()) is warned


def test_checks(settings: Any) -> None:
    settings.SILENCED_SYSTEM_CHECKS = []
    settings.FRAGCACHE = {"KEY_PRFIX": "typo"}
    assert check_ids() == {"fragcache.E001", "fragcache.W001"}
    settings.FRAGCACHE = {"CACHE": "nowhere"}
    assert check_ids() == {"fragcache.E002"}
    settings.DEBUG = True
    settings.FRAGCACHE = {}
    assert check_ids() == set()


# -- safety ---------------------------------------------------------------------------------


def cached_form_entries(prefix: str, *vary: object) -> list[bytes | None]:
    cache = get_fragment_cache()
    return cache.backend.get_many([make_fragment_key("form", vary, prefix=prefix)])


TOKEN = re.compile(r"[A-Za-z0-9]{64}")


def page_token(response: Any) -> str:
    (token,) = TOKEN.findall(response.content.decode())
    return str(token)


def valid_for(client: Client, token: str) -> bool:
    from django.middleware.csrf import _does_token_match  # type: ignore[attr-defined]

    return bool(_does_token_match(token, client.cookies["csrftoken"].value))


@pytest.mark.parametrize("engine", ["dtl", "jinja2", "jinja2-raw", "meta"])
def test_a_shared_fragment_with_a_token_gives_each_visitor_their_own(
    cache_settings: str, engine: str
) -> None:
    alice, bob = Client(), Client()
    alices = page_token(alice.get(f"/form/{engine}/"))
    stored = cached_form_entries(cache_settings)[0]
    assert stored is not None and b"\x00csrf_token\x00" in stored
    assert alices.encode() not in stored
    bobs = page_token(bob.get(f"/form/{engine}/"))  # a hit
    assert get_fragment_cache().stats()["form"]["hits"] == 1
    assert valid_for(bob, bobs) and not valid_for(bob, alices)
    assert valid_for(alice, page_token(alice.get(f"/form/{engine}/")))


@pytest.mark.parametrize("engine", ["dtl-hole", "jinja2-hole"])
def test_the_token_and_a_nocache_hole_fill_alike_in_one_shared_fragment(
    cache_settings: str, engine: str
) -> None:
    alice, bob = Client(), Client()
    first = alice.get(f"/form/{engine}/?who=alice")
    assert b"Hi alice</form>" in first.content
    stored = cached_form_entries(cache_settings)[0] or b""
    assert b"\x00csrf_token\x00" in stored and b"\x000\x00" in stored
    assert b"alice" not in stored
    second = bob.get(f"/form/{engine}/?who=bob")  # a hit: both holes filled
    assert b"Hi bob</form>" in second.content
    assert get_fragment_cache().stats()["form"]["hits"] == 1
    assert valid_for(bob, page_token(second))
    assert valid_for(alice, page_token(first))


@pytest.mark.django_db
@pytest.mark.parametrize("engine", ["dtl", "jinja2"])
def test_a_fragment_keyed_by_a_pk_equal_to_the_users_gives_others_their_token(
    cache_settings: str, engine: str
) -> None:
    from django.contrib.auth.models import User

    alice = User.objects.create_user("alice", password="pw")
    client = Client()
    client.force_login(alice)
    # VARY is a product pk that happens to be alice's user pk.
    page_token(client.get(f"/form/{engine}/?vary={alice.pk}"))
    anonymous = Client()
    token = page_token(anonymous.get(f"/form/{engine}/?vary={alice.pk}"))
    assert get_fragment_cache().stats()["form"]["hits"] == 1
    assert valid_for(anonymous, token)


FOREIGN = (
    '{% cache_fragment 300 form %}<input name="csrfmiddlewaretoken" value="'
    + "a1" * 32
    + '">{% endcache_fragment %}'
)


def test_a_token_that_is_not_the_requests_is_never_stored(
    cache_settings: str, caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    from django_bridge.safety import CsrfTokenInFragment

    template = compile_source("dtl", FOREIGN)
    assert "a1a1" in template.render({})
    assert cached_form_entries(cache_settings) == [None]
    assert "not the current request's" in caplog.text
    settings.DEBUG = True
    with pytest.raises(CsrfTokenInFragment, match="csrf_token"):
        compile_source("dtl", FOREIGN).render({})


# -- management commands -------------------------------------------------------------------


def test_invalidate_fragment_command(render: Render) -> None:
    from django.core.management import call_command

    tick = Tick()
    card = '{% cache_fragment 300 card p tags="products" %}{{ tick.c }}{% endcache_fragment %}'
    render(card, tick=tick, p=1)
    render(card, tick=tick, p=2)
    out = StringIO()
    call_command("invalidate_fragment", "card", "1", stdout=out)
    assert "Invalidated 'card' ['1']" in out.getvalue()
    render(card, tick=tick, p=1)
    render(card, tick=tick, p=2)
    assert tick.count == {"c": 3}
    call_command("invalidate_fragment", "card", "--all", stdout=out)
    render(card, tick=tick, p=2)
    call_command("invalidate_fragment", "--tag", "products", stdout=out)
    render(card, tick=tick, p=2)
    assert tick.count == {"c": 5}


@pytest.mark.parametrize(
    ("argv", "message"),
    [((), "NAME, or --tag"), (("card", "1", "--all"), "no VARY values")],
)
def test_invalidate_fragment_command_errors(
    cache_settings: str, argv: tuple[str, ...], message: str
) -> None:
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match=message):
        call_command("invalidate_fragment", *argv)


def test_invalidate_fragment_command_fails_when_the_cache_is_down(
    settings: Any,
) -> None:
    from django.core.management import CommandError, call_command

    from .support import unreachable_redis_caches

    settings.CACHES = unreachable_redis_caches()
    settings.FRAGCACHE = {"KEY_PREFIX": "down" + uuid.uuid4().hex[:8]}
    with pytest.raises(CommandError, match="unreachable"):
        call_command("invalidate_fragment", "card", "--all")


def test_cache_stats_command(engine: str, cache_settings: str) -> None:
    from django.core.management import call_command

    for _ in range(2):
        compile_source(
            engine, "{% cache_fragment 300 tiny %}x{% endcache_fragment %}"
        ).render({})
    out = StringIO()
    call_command("cache_stats", stdout=out)
    table = out.getvalue()
    assert "hit rate 50.0% (1 hits, 1 misses)" in table
    assert "tiny" in table.splitlines()[2]
    out = StringIO()
    call_command("cache_stats", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["fragments"]["tiny"]["hits"] == 1


# -- more of the same semantics, DTL side ---------------------------------------------------


def dtl_engine(folder: Any) -> Any:
    from django.template import Engine

    return Engine(
        dirs=[str(folder)],
        libraries={"cache_tags": "django_bridge.templatetags.cache_tags"},
    )


def test_editing_a_dtl_block_or_its_include_invalidates(
    cache_settings: str, tmp_path: Any
) -> None:
    page = tmp_path / "page.html"
    (tmp_path / "part.html").write_text("v1")
    page.write_text(
        "{% load cache_tags %}{% cache_fragment 300 box %}old {% include 'part.html' %}{% endcache_fragment %}"
    )
    assert dtl_engine(tmp_path).get_template("page.html").render(Context()) == "old v1"
    page.write_text(
        "{% load cache_tags %}\n{% cache_fragment 300 box %}old {% include 'part.html' %}{% endcache_fragment %}"
    )
    assert (
        dtl_engine(tmp_path).get_template("page.html").render(Context()) == "\nold v1"
    )  # edited elsewhere: a hit
    (tmp_path / "part.html").write_text("v2")
    assert (
        dtl_engine(tmp_path).get_template("page.html").render(Context()) == "\nold v2"
    )
    page.write_text(
        "{% load cache_tags %}{% cache_fragment 300 box %}new{% endcache_fragment %}"
    )
    assert dtl_engine(tmp_path).get_template("page.html").render(Context()) == "new"


def test_a_hit_is_one_round_trip(render: Render) -> None:
    from .support import CountingBackend

    cache = get_fragment_cache()
    counting = CountingBackend(cache.backend)
    cache.backend = counting
    source = "{% cache_fragment 300 once p %}x{% endcache_fragment %}"
    render(source, p=1)
    counting.reset()
    render(source, p=1)
    assert counting.calls == {counting.read: 1}


def test_pages_render_when_the_cache_server_is_down(engine: str, settings: Any) -> None:
    from .support import unreachable_redis_caches

    settings.CACHES = unreachable_redis_caches()
    settings.FRAGCACHE = {"KEY_PREFIX": "down" + uuid.uuid4().hex[:8]}
    source = "{% cache_fragment 300 box p %}body {{ p }}{% endcache_fragment %}"
    assert compile_source(engine, source).render({"p": 1}) == "body 1"
    assert compile_source(engine, source).render({"p": 2}) == "body 2"


@pytest.mark.django_db
def test_users_never_share_what_varies_per_user(
    cache_settings: str, engine: str
) -> None:
    from django.contrib.auth.models import User
    from django.test import RequestFactory

    source = "{% cache_fragment 300 profile request.user.pk %}{{ request.user.username }}{% endcache_fragment %}"
    template = compile_source(engine, source)
    for name in ("ann", "bob", "ann"):
        request = RequestFactory().get("/")
        request.user = User.objects.get_or_create(username=name)[0]
        assert (
            template.render(
                {"request": request} if engine == "dtl" else {}, request
            ).strip()
            == name
        )


def test_invalidate_fragment_lives_where_the_spec_says() -> None:
    from django_bridge.templatetags.cache_tags import invalidate_fragment as from_tags

    assert from_tags is invalidate_fragment


def test_stats_add_up_every_process(cache_settings: str, engine: str) -> None:
    from django.core.management import call_command

    from django_bridge.stats import PROCESS, publish

    source = "{% cache_fragment 300 shared_box %}x{% endcache_fragment %}"
    for _ in range(2):
        compile_source(engine, source).render({})
    other = {
        "shared_box": {
            "hits": 3,
            "misses": 1,
            "renders": 1,
            "fetches": 4,
            "fetch_seconds": 0.004,
            "render_seconds": 0.5,
        }
    }
    publish("worker-2", other)
    publish()  # this one too: its live figures are used, not counted twice
    stats = get_cache_stats()
    box = stats["fragments"]["shared_box"]
    assert (box["hits"], box["misses"], box["renders"]) == (4, 2, 2)
    assert stats["hits"] == 4
    out = StringIO()
    call_command("cache_stats", stdout=out)
    assert "hit rate 66.7% (4 hits, 2 misses)" in out.getvalue()
    assert PROCESS


def test_a_request_publishes_this_process(cache_settings: str) -> None:
    import django_bridge.stats as bridge_stats
    from jinja_fragcache.keys import stats_key

    bridge_stats._last_published = 0.0
    Client().get("/dtl/?pk=3")
    cache = get_fragment_cache()
    key = stats_key(bridge_stats.PROCESS, prefix=cache.prefix)
    assert json.loads(cache.backend.get_many([key])[0] or b"{}")["card"]["misses"] == 1


def test_an_unclosed_tag_inside_is_blamed_on_itself(cache_settings: str) -> None:
    with pytest.raises(TemplateSyntaxError) as info:
        compile_source(
            "dtl", "{% cache_fragment 300 x %}{% if a %}{% endcache_fragment %}"
        )
    assert "never closed" not in str(info.value)
    with pytest.raises(
        TemplateSyntaxError, match="never closed: missing endcache_fragment"
    ):
        compile_source("dtl", "{% cache_fragment 300 x %}{% if a %}{% endif %}")


def test_dtl_collections_nested_in_a_fragment(render: Render) -> None:
    tick = Tick()
    page = (
        "{% cache_fragment 300 listing %}<{{ tick.page }}"
        '{% cache_each 300 row p in items p tags="rows" if cached %}[{{ p }}{{ tick.row }}]{% endcache_each %}'
        ">{% endcache_fragment %}"
    )
    assert render(page, items=[1, 2], tick=tick, cached=True) == "<page[1row][2row]>"
    assert render(page, items=[1, 2], tick=tick, cached=True) == "<page[1row][2row]>"
    invalidate_fragment("row", 2)
    assert render(page, items=[1, 2], tick=tick, cached=True) == "<page[1row][2row]>"
    assert tick.count == {"page": 2, "row": 3}


def test_server_figures_from_djangos_own_redis_cache(
    settings: Any, redis_url: str
) -> None:
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
        }
    }
    settings.FRAGCACHE = {"KEY_PREFIX": "own" + uuid.uuid4().hex[:8]}
    compile_source("dtl", "{% cache_fragment 300 x %}x{% endcache_fragment %}").render(
        {}
    )
    stats = get_cache_stats()
    assert isinstance(stats["keys"], int) and stats["keys"] > 0
    assert isinstance(stats["memory_peak"], int)


@pytest.mark.parametrize(
    "garbage",
    [b"42", b'"a string"', b'{"x": 1}', b"\xff\xfe", b'[1, {"a": 2}]'],
)
def test_garbage_in_the_stats_registry_or_a_snapshot_reads_as_nothing(
    cache_settings: str, garbage: bytes
) -> None:
    from django_bridge.stats import publish
    from jinja_fragcache.keys import stats_key

    publish("worker-2", {"box": {"hits": "many", "misses": 1}, "odd": 7})
    backend = get_fragment_cache().backend
    worker = stats_key("worker-2", prefix=cache_settings)
    assert get_cache_stats()["fragments"]["box"]["misses"] == 1  # "many" left out
    backend.set(worker, garbage, None)
    assert "box" not in get_cache_stats()["fragments"]
    backend.set(stats_key("processes", prefix=cache_settings), garbage, None)
    assert get_cache_stats()["hits"] == 0
    publish()  # and publishing mends the registry


@pytest.mark.parametrize("staff_first", [True, False])
def test_an_inner_that_did_not_cache_is_never_frozen_into_its_outer(
    render: Render, staff_first: bool
) -> None:
    source = (
        "{% cache_fragment 300 page %}{% cache_fragment 300 menu if not staff %}"
        "{% if staff %}staff menu{% else %}public menu{% endif %}"
        "{% endcache_fragment %}{% endcache_fragment %}"
    )
    order = [True, False] if staff_first else [False, True]
    for staff in order + order:
        assert render(source, staff=staff) == ("staff menu" if staff else "public menu")


@pytest.mark.parametrize("staff_first", [True, False])
def test_an_inner_in_an_included_template_is_never_frozen_into_its_outer(
    engine: str, render: Render, staff_first: bool
) -> None:
    included = "staff_menu.html" if engine == "dtl" else "staff_menu.jinja"
    source = (
        f"{{% cache_fragment 300 page %}}{{% include '{included}' %}}"
        "{% endcache_fragment %}"
    )
    order = [True, False] if staff_first else [False, True]
    for staff in order + order:
        assert render(source, staff=staff) == ("staff menu" if staff else "public menu")
