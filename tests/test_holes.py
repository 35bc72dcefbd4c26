"""``{% nocache %}`` holes: live on every request, hit or miss, in both engines.

The Jinja cases run sync and async, with ``{% %}`` and ``<% %>``, on memory
and Redis (the matrix fixtures of ``conftest.py``); the Django cases run the
same sources through DTL and the bridge's Jinja2 environment.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from django.template import TemplateSyntaxError as DjangoSyntaxError
from jinja2 import TemplateSyntaxError

from jinja_fragcache import FragmentCache, FragmentCacheWarning
from jinja_fragcache.entry import Entry
from jinja_fragcache.recording import page_contents

from .support import (
    PLACEHOLDER,
    MakeEnv,
    Tick,
    Ticks,
    render,
    render_unchecked,
    template,
)
from .test_django_bridge import compile_source as compile_unchecked

SIDEBAR = (
    "{% cache_fragment 300 sidebar %}[{{ tick('sidebar') }}] "
    "Hello, {% nocache %}{{ user }}{% endnocache %}!{% endcache_fragment %}"
)


def stored_body(cache: FragmentCache, name: str, *vary: object) -> str:
    raw = cache.backend.get_many([cache.key_for(name, *vary)])[0]
    assert raw is not None, f"{name} was not stored"
    return Entry.decode(raw).body


def test_a_hole_renders_for_each_user_inside_a_shared_fragment(
    make_env: MakeEnv, cache: FragmentCache, tick: Tick
) -> None:
    t = template(make_env(), SIDEBAR)
    assert render(t, tick=tick, user="alice") == "[sidebar] Hello, alice!"
    assert render(t, tick=tick, user="bob") == "[sidebar] Hello, bob!"
    assert tick.count == {"sidebar": 1}  # bob's was a hit
    # The entry keeps the block's place, not alice's name.
    assert stored_body(cache, "sidebar") == "[sidebar] Hello, \x000\x00!"


def test_a_hole_sees_the_context_outside_the_fragment_on_a_hit(
    make_env: MakeEnv, tick: Tick
) -> None:
    env = make_env()
    env.globals["site"] = "Shop"
    t = template(
        env,
        "{% set greeting = 'Hi' %}{% for user in users %}"
        "{% cache_fragment 300 box %}{{ tick('box') }}:"
        "{% nocache %}{{ greeting }} {{ user }} @{{ site }}{% endnocache %}"
        "{% endcache_fragment %};{% endfor %}",
    )
    assert render(t, tick=tick, users=["a", "b", "c"]) == (
        "box:Hi a @Shop;box:Hi b @Shop;box:Hi c @Shop;"
    )
    assert tick.count == {"box": 1}


def test_holes_inside_nested_fragments_stay_live_at_every_depth(
    make_env: MakeEnv, cache: FragmentCache, tick: Tick
) -> None:
    t = template(
        make_env(),
        "{% cache_fragment 300 page %}<{{ tick('page') }}"
        "{% cache_fragment 300 cart %}({{ tick('cart') }} "
        "{% nocache %}{{ items }} items{% endnocache %})"
        "{% endcache_fragment %}"
        "{% nocache %} for {{ user }}{% endnocache %}>{% endcache_fragment %}",
    )
    assert render(t, tick=tick, items=1, user="a") == "<page(cart 1 items) for a>"
    assert render(t, tick=tick, items=2, user="b") == "<page(cart 2 items) for b>"
    # The outer re-renders around a cart that is a hit: its hole must stay
    # a hole in the outer entry, not freeze "3 items".
    cache.invalidate_all("page")
    assert render(t, tick=tick, items=3, user="c") == "<page(cart 3 items) for c>"
    assert render(t, tick=tick, items=4, user="d") == "<page(cart 4 items) for d>"
    assert tick.count == {"page": 2, "cart": 1}
    assert "items" not in stored_body(cache, "page").split("\x00")[2]


def test_holes_inside_cache_each(
    make_env: MakeEnv, cache: FragmentCache, tick: Tick
) -> None:
    t = template(
        make_env(),
        "{% cache_each 300 card p in products p %}[{{ tick(p) }}"
        "{% nocache %}:{{ user }}{% endnocache %}]{% endcache_each %}",
    )
    assert render(t, tick=tick, products=[1, 2], user="a") == "[1:a][2:a]"
    assert render(t, tick=tick, products=[1, 2, 3], user="b") == "[1:b][2:b][3:b]"
    assert tick.count == {1: 1, 2: 1, 3: 1}


def test_content_that_looks_like_a_placeholder_is_never_replaced(
    make_env: MakeEnv, cache: FragmentCache
) -> None:
    forged = (
        "\x000\x00 \x001\x00 \x00csrf_token\x00 \x00\x00 \x00" + "ab" * 16 + "0\x00"
    )
    t = template(
        make_env(),
        "{% cache_fragment 300 f %}{{ forged }}|{% nocache %}{{ user }}"
        "{% endnocache %}{% endcache_fragment %}",
    )
    # Not through render(), whose placeholder check it would trip on purpose.
    for user in ("alice", "bob"):
        assert render_unchecked(t, forged=forged, user=user) == f"{forged}|{user}"
    assert stored_body(cache, "f").startswith("\x00\x000\x00\x00")


@pytest.mark.parametrize(
    "source, name",
    [
        (
            "{% cache_each 300 card p in ps p %}\n{% nocache %}{{ p }}{% endnocache %}"
            "{% endcache_each %}",
            "p",
        ),
        (
            "{% cache_fragment 300 f %}{% set who = user %}\n"
            "{% nocache %}{{ who }}{% endnocache %}{% endcache_fragment %}",
            "who",
        ),
        (
            "{% cache_fragment 300 f %}{% for x in xs %}\n"
            "{% nocache %}{{ loop.index }}{% endnocache %}{% endfor %}"
            "{% endcache_fragment %}",
            "loop",
        ),
        (
            "{% cache_fragment 300 outer %}{% for x in xs %}"
            "{% cache_fragment 300 inner x %}\n{% nocache %}{{ x }}{% endnocache %}"
            "{% endcache_fragment %}{% endfor %}{% endcache_fragment %}",
            "x",
        ),
    ],
)
def test_a_hole_reading_a_name_bound_inside_the_fragment_is_a_compile_error(
    make_env: MakeEnv, source: str, name: str
) -> None:
    env = make_env({"page.html": source})
    with pytest.raises(TemplateSyntaxError, match=f"nocache reads '{name}'") as info:
        env.get_template("page.html")
    assert info.value.lineno == 2
    assert info.value.name == "page.html"


def test_names_of_the_hole_itself_and_from_outside_are_fine(
    make_env: MakeEnv, tick: Tick
) -> None:
    t = template(
        make_env(),
        "{% for x in xs %}{% cache_fragment 300 f x %}{{ tick(x) }}"
        "{% nocache %}{% set y = x * 10 %}{% for z in [y] %}{{ z }}{% endfor %}"
        "{% endnocache %}{% endcache_fragment %}{% endfor %}",
    )
    assert render(t, tick=tick, xs=[1, 2]) == "110220"
    assert render(t, tick=tick, xs=[1, 2]) == "110220"
    assert tick.count == {1: 1, 2: 1}


def test_a_hole_in_an_included_template_keeps_the_fragment_uncached(
    make_env: MakeEnv, cache: FragmentCache, tick: Tick
) -> None:
    env = make_env(
        {
            "page.html": "{% cache_fragment 300 page %}{{ tick('page') }}"
            "{% include 'hello.html' %}{% endcache_fragment %}",
            "hello.html": " hi {% nocache %}{{ user }}{% endnocache %}",
        }
    )
    page = env.get_template("page.html")
    with pytest.warns(FragmentCacheWarning, match="belongs to another template"):
        assert render(page, tick=tick, user="a") == "page hi a"
    with pytest.warns(FragmentCacheWarning):
        assert render(page, tick=tick, user="b") == "page hi b"
    assert tick.count == {"page": 2}


def test_a_hole_another_template_cannot_fill_renders_uncached_and_is_logged(
    make_env: MakeEnv, caplog: pytest.LogCaptureFixture, tick: Tick
) -> None:
    env = make_env(
        {
            "a.html": "{% cache_fragment 300 shared %}A{% nocache %}{{ user }}"
            "{% endnocache %}{% endcache_fragment %}",
            "b.html": "{% cache_fragment 300 shared %}{{ tick('b') }}"
            "{% endcache_fragment %}",
        }
    )
    assert render(env.get_template("a.html"), user="x") == "Ax"
    with caplog.at_level(logging.ERROR, "jinja_fragcache"):
        assert render(env.get_template("b.html"), tick=tick) == "b"
    assert "'shared' (template 'b.html', line 1) rendered uncached" in caplog.text
    assert tick.count == {"b": 1}


def test_a_marker_altered_by_a_filter_renders_uncached_never_leaks(
    make_env: MakeEnv, caplog: pytest.LogCaptureFixture, cache: FragmentCache
) -> None:
    env = make_env(
        {
            "f.html": "\n{% cache_fragment 300 f %}{% set x %}{% nocache %}{{ user }}"
            "{% endnocache %}{% endset %}{{ x | upper }}{% endcache_fragment %}"
        }
    )
    t = env.get_template("f.html")
    with caplog.at_level(logging.ERROR, "jinja_fragcache"):
        assert render(t, user="al") == "\nAL"
    assert "'f' (template 'f.html', line 2) rendered uncached" in caplog.text
    assert "marker was altered" in caplog.text
    assert render(t, user="bo") == "\nBO"
    assert cache.backend.get_many([cache.key_for("f")]) == [None]


def test_a_hit_with_a_hole_tells_the_page_it_varies(
    make_env: MakeEnv, tick: Tick
) -> None:
    t = template(make_env(), SIDEBAR)
    with page_contents() as miss:
        render(t, tick=tick, user="a")
    with page_contents() as hit:
        render(t, tick=tick, user="b")
    assert miss.holes == hit.holes == 1
    plain = template(make_env(), "{% cache_fragment 300 p %}x{% endcache_fragment %}")
    with page_contents() as none:
        render(plain)
        render(plain)
    assert none.holes == 0


def test_nocache_outside_any_fragment_just_renders(make_env: MakeEnv) -> None:
    t = template(make_env(), "{% nocache %}{{ 1 + 1 }}{% endnocache %}")
    assert render(t) == "2"


# -- both Django engines ----------------------------------------------------------


@pytest.fixture(params=["locmem", "redis"])
def django_cache(request: pytest.FixtureRequest, settings: Any) -> str:
    prefix = "holes" + uuid.uuid4().hex[:8]
    if request.param == "redis":
        settings.CACHES = {
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": request.getfixturevalue("redis_url"),
            }
        }
    settings.FRAGCACHE = {"KEY_PREFIX": prefix}
    return prefix


@pytest.mark.parametrize("engine", ["dtl", "jinja2"])
def test_django_engines_fill_holes_per_request(engine: str, django_cache: str) -> None:
    t = compile_source(
        engine,
        "{% cache_fragment 300 menu %}[{{ tick.menu }}] "
        "{% nocache %}{{ user }}{% endnocache %}{% endcache_fragment %}"
        "{% cache_each 300 row p in ps p %}({{ p }}{% nocache %}:{{ user }}"
        "{% endnocache %}){% endcache_each %}",
    )
    tick = Ticks()
    assert t.render({"user": "alice", "tick": tick, "ps": [1, 2]}) == (
        "[1] alice(1:alice)(2:alice)"
    )
    assert t.render({"user": "bob", "tick": tick, "ps": [1, 2]}) == (
        "[1] bob(1:bob)(2:bob)"
    )


@pytest.mark.parametrize("engine", ["dtl", "jinja2"])
def test_django_engines_refuse_names_bound_inside(
    engine: str, django_cache: str
) -> None:
    with pytest.raises((DjangoSyntaxError, TemplateSyntaxError), match="'p'"):
        compile_source(
            engine,
            "{% cache_each 300 row p in ps p %}{% nocache %}{{ p.name|default:'' }}"
            "{% endnocache %}{% endcache_each %}"
            if engine == "dtl"
            else "{% cache_each 300 row p in ps p %}{% nocache %}{{ p.name }}"
            "{% endnocache %}{% endcache_each %}",
        )
    with pytest.raises(
        (DjangoSyntaxError, TemplateSyntaxError), match="'forloop'|'loop'"
    ):
        compile_source(
            engine,
            "{% cache_fragment 300 f %}{% for x in xs %}{% nocache %}"
            + ("{{ forloop.counter }}" if engine == "dtl" else "{{ loop.index }}")
            + "{% endnocache %}{% endfor %}{% endcache_fragment %}",
        )


def test_dtl_and_jinja_twins_fill_each_others_holes(django_cache: str) -> None:
    source = (
        "{% cache_fragment 300 twin %}<{{ tick.twin }}>"
        "{% nocache %}{{ user }}{% endnocache %}{% endcache_fragment %}"
    )
    tick = Ticks()
    assert compile_source("dtl", source).render({"user": "a", "tick": tick}) == "<1>a"
    assert compile_source("jinja2", source).render({"user": "b", "tick": tick}) == (
        "<1>b"
    )


def compile_source(engine: str, source: str) -> Any:
    """A Django template whose output is checked for placeholders."""
    compiled = compile_unchecked(engine, source)

    class Checked:
        def render(self, context: dict[str, Any]) -> str:
            output = str(compiled.render(context))
            assert not PLACEHOLDER.search(output), f"a placeholder leaked: {output!r}"
            return output

    return Checked()
