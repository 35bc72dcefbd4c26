"""The Jinja tags, rendered sync and async, with {% %} and <% %>, on every backend."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from jinja2 import Environment, TemplateRuntimeError, pass_context
from jinja2.exceptions import TemplateSyntaxError
from jinja2.runtime import Context

from jinja_fragcache import (
    FragmentCache,
    FragmentCacheExtension,
    FragmentCacheWarning,
    MemoryBackend,
    get_default_cache,
    invalidate_fragment,
    make_fragment_key,
    set_default_cache,
)
from jinja_fragcache.entry import Entry
from jinja_fragcache.keys import name_version_key, tag_version_key, variant_version_key
from jinja_fragcache.recording import page_contents

from .support import (
    CountingBackend,
    MakeEnv,
    Tick,
    Ticks,
    near_quiet,
    render,
    template,
    trips,
)

# -- syntax ---------------------------------------------------------------------


def test_miss_then_hit(make_env: MakeEnv, tick: Tick, backend: CountingBackend) -> None:
    t = template(
        make_env(),
        "{% cache_fragment 300 sidebar %}{{ tick('s') }}{% endcache_fragment %}",
    )
    assert render(t, tick=tick) == "s"
    backend.reset()
    assert render(t, tick=tick) == "s"
    assert tick.count == {"s": 1}
    assert backend.calls == {backend.read: 1}  # a hit is one round trip


def test_bare_and_quoted_names_are_the_same_fragment(
    make_env: MakeEnv, tick: Tick
) -> None:
    env = make_env()
    bare = template(
        env, "{% cache_fragment 300 sidebar 1 %}{{ tick('a') }}{% endcache_fragment %}"
    )
    quoted = template(
        env,
        '{% cache_fragment 300 "sidebar" 1 %}{{ tick("b") }}{% endcache_fragment %}',
    )
    assert render(bare, tick=tick) == "a"
    assert render(quoted, tick=tick) == "a"


def test_vary_by_whitespace_or_commas_and_by_str(make_env: MakeEnv, tick: Tick) -> None:
    env = make_env()
    spaces = template(
        env, "{% cache_fragment 300 card a b %}{{ tick('x') }}{% endcache_fragment %}"
    )
    commas = template(
        env, "{% cache_fragment 300 card a, b %}{{ tick('y') }}{% endcache_fragment %}"
    )
    assert render(spaces, tick=tick, a=42, b="en") == "x"
    assert render(commas, tick=tick, a="42", b="en") == "x"
    assert render(commas, tick=tick, a=43, b="en") == "y"


def test_vary_expressions(make_env: MakeEnv, tick: Tick) -> None:
    t = template(
        make_env(),
        "{% cache_fragment 300 card user.id, lang|upper, n + 1 %}{{ tick('x') }}{% endcache_fragment %}",
    )
    render(t, tick=tick, user={"id": 1}, lang="en", n=1)
    render(t, tick=tick, user={"id": 1}, lang="en", n=1)
    render(t, tick=tick, user={"id": 2}, lang="en", n=1)
    assert tick.count == {"x": 2}


def test_same_syntax_under_both_delimiters(
    make_env: MakeEnv, cache: FragmentCache
) -> None:
    t = template(make_env(), "{% cache_key_for sidebar 42 %}")
    assert render(t) == make_fragment_key("sidebar", [42], prefix=cache.prefix)


def test_timeout_none_never_expires(
    make_env: MakeEnv, tick: Tick, cache: FragmentCache
) -> None:
    t = template(
        make_env(),
        "{% cache_fragment None forever %}{{ tick('x') }}{% endcache_fragment %}",
    )
    render(t, tick=tick)
    entry = Entry.decode(cache.backend.get_many([cache.key_for("forever")])[0] or b"")
    assert entry.soft_expiry is None
    assert render(t, tick=tick) == "x"
    assert tick.count == {"x": 1}


def test_timeout_zero_does_not_cache(
    make_env: MakeEnv, tick: Tick, backend: CountingBackend
) -> None:
    t = template(
        make_env(), "{% cache_fragment 0 live %}{{ tick('x') }}{% endcache_fragment %}"
    )
    render(t, tick=tick)
    render(t, tick=tick)
    assert tick.count == {"x": 2}
    assert backend.calls == {}


def test_computed_timeout_and_float(make_env: MakeEnv, tick: Tick) -> None:
    t = template(
        make_env(), "{% cache_fragment t * 2 f %}{{ tick('x') }}{% endcache_fragment %}"
    )
    render(t, tick=tick, t=0.25)
    render(t, tick=tick, t=0.25)
    assert tick.count == {"x": 1}


@pytest.mark.parametrize("timeout", ["-1", "'300'", "'soon'", "true", "-0.5"])
def test_bad_literal_timeout_fails_at_compile_time(
    make_env: MakeEnv, timeout: str
) -> None:
    env = make_env(
        {
            "page.html": "line one\n\n{% cache_fragment "
            + timeout
            + " x %}{% endcache_fragment %}"
        }
    )
    with pytest.raises(TemplateSyntaxError, match="timeout") as info:
        env.get_template("page.html")
    assert info.value.lineno == 3
    assert info.value.name == "page.html"


@pytest.mark.parametrize("value", [-5, "300", True, [1]])
def test_bad_computed_timeout_fails_at_render_time(
    make_env: MakeEnv, value: object
) -> None:
    env = make_env(
        {"page.html": "\n{% cache_fragment t x %}body{% endcache_fragment %}"}
    )
    with pytest.raises(TemplateRuntimeError) as info:
        render(env.get_template("page.html"), t=value)
    message = str(info.value)
    assert "page.html" in message
    assert "line 2" in message
    assert repr(value) in message


@pytest.mark.parametrize(
    ("source", "line", "message"),
    [
        ("\n{% cache_fragment %}{% endcache_fragment %}", 2, "TIMEOUT and a NAME"),
        ("\n\n{% cache_fragment 300 %}{% endcache_fragment %}", 3, "NAME"),
        (
            "{% cache_fragment 300 x a bogus=1 %}{% endcache_fragment %}",
            1,
            "unknown keyword 'bogus'",
        ),
        (
            "\n{% cache_fragment 300 x tags=1 tags=2 %}{% endcache_fragment %}",
            2,
            "twice",
        ),
        (
            "a\n{% cache_fragment 300 x %}\nb\n\nc",
            2,
            "never closed: missing endcache_fragment",
        ),
        ("{% cache_each 300 card p in items %}{% endcache_each %}", 1, "VARY"),
        ("\n{% cache_each 300 card p in items p.id %}", 2, "missing endcache_each"),
        ("{% cache_each 300 card %}{% endcache_each %}", 1, "expected token"),
        ("\n{% invalidate_fragment %}", 2, "NAME"),
        ("{% cache_key_for x tags=1 %}", 1, "unknown keyword 'tags'"),
        (
            "{% cache_fragment 300 x if a b %}{% endcache_fragment %}",
            1,
            "must come last",
        ),
    ],
)
def test_syntax_errors_name_template_and_line(
    make_env: MakeEnv, source: str, line: int, message: str
) -> None:
    env = make_env({"bad.html": source})
    with pytest.raises(TemplateSyntaxError) as info:
        env.get_template("bad.html")
    assert message in info.value.message  # type: ignore[operator]
    assert info.value.lineno == line
    assert info.value.name == "bad.html"


def test_if_condition_caches_only_when_true(make_env: MakeEnv, tick: Tick) -> None:
    t = template(
        make_env(),
        "{% cache_fragment 300 menu if not staff %}{{ tick(who) }}{% endcache_fragment %}",
    )
    for _ in range(2):
        assert render(t, tick=tick, staff=False, who="user") == "user"
        assert render(t, tick=tick, staff=True, who="staff") == "staff"
    assert tick.count == {"user": 1, "staff": 2}


def test_condition_can_use_full_expressions(make_env: MakeEnv, tick: Tick) -> None:
    t = template(
        make_env(),
        "{% cache_fragment 300 menu u if u and not (preview or u == 'x') %}{{ tick(u) }}{% endcache_fragment %}",
    )
    for _ in range(2):
        render(t, tick=tick, u="a", preview=False)
        render(t, tick=tick, u="b", preview=True)
    assert tick.count == {"a": 1, "b": 2}


def test_no_tag_renders_through_context_call(
    make_env: MakeEnv, tick: Tick, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A miss, a hit with a hole and a cache_each page call the cache as
    # filters, the caller macro an argument, and cache_each gathers its
    # items' vary values by filters too: a call block, or a method call,
    # goes through Context.call (about a microsecond) on every one.  What
    # the body calls (tick) and the blocks inside do, on a miss.
    called: list[str] = []
    original = Context.call

    def call(self: Context, obj: Any, *args: Any, **kwargs: Any) -> Any:
        called.append(getattr(obj, "__name__", repr(obj)))
        return original(self, obj, *args, **kwargs)

    monkeypatch.setattr(Context, "call", call)
    env = make_env()
    plain = template(
        env, "{% cache_fragment 300 p v %}{{ tick('p') }}{% endcache_fragment %}"
    )
    holed = template(
        env,
        "{% cache_fragment 300 h v %}{{ tick('h') }}"
        "{% nocache %}{{ v }}{% endnocache %}{% endcache_fragment %}",
    )
    each = template(
        env,
        "{% cache_each 300 e item in items item %}{{ tick(item) }}{% endcache_each %}",
    )
    holed_each = template(
        env,
        "{% cache_each 300 he item in items item %}{{ tick(item) }}"
        "{% nocache %}!{% endnocache %}{% endcache_each %}",
    )
    for _ in range(2):  # a miss, then a hit
        assert render(plain, tick=tick, v=1) == "p"
        assert render(holed, tick=tick, v=2) == "h2"
        assert render(each, tick=tick, items=["a", "b"]) == "ab"
        assert render(holed_each, tick=tick, items=["c"]) == "c!"
    assert "_nocache" in called  # the patch sees what goes through it
    assert set(called) - {"_nocache"} == {repr(tick)}
    assert tick.count == {"p": 1, "h": 1, "a": 1, "b": 1, "c": 1}


def test_the_callers_name_stays_out_of_the_context(make_env: MakeEnv) -> None:
    @pass_context
    def ours(context: Context) -> str:
        return ",".join(sorted(k for k in context.vars if k.startswith("_fragcache")))

    env = make_env()
    env.globals["ours"] = ours
    t = template(
        env,
        "{% cache_fragment 300 top %}x{% endcache_fragment %}"
        "{% cache_each 300 row item in items item %}{{ item }}{% endcache_each %}"
        "[{{ ours() }}]",
    )
    assert render(t, items=[1]) == "x1[]"  # a miss
    assert render(t, items=[1]) == "x1[]"  # a hit


# -- markup ----------------------------------------------------------------------


@pytest.mark.parametrize("autoescape", [True, False])
def test_hit_is_byte_identical_to_the_render(
    make_env: MakeEnv, autoescape: bool, tick: Tick
) -> None:
    t = template(
        make_env(autoescape=autoescape),
        "<p>{% cache_fragment 300 m %}{{ raw }}|{{ raw|safe }}|{{ tick('x') }}&amp;{% endcache_fragment %}</p>{{ raw }}",
    )
    first = render(t, raw="<b>&</b>", tick=tick)
    second = render(t, raw="<b>&</b>", tick=tick)
    assert first == second
    assert tick.count == {"x": 1}
    inner = "&lt;b&gt;&amp;&lt;/b&gt;" if autoescape else "<b>&</b>"
    assert first == f"<p>{inner}|<b>&</b>|x&amp;</p>{inner}"


# -- cache_each ----------------------------------------------------------------


def test_cache_each_keeps_order_and_renders_only_misses(
    make_env: MakeEnv, tick: Tick, backend: CountingBackend
) -> None:
    t = template(
        make_env(),
        "{% cache_each 300 card p in items p.id %}[{{ tick(p.id) }}]{% endcache_each %}",
    )
    items = [{"id": i} for i in (3, 1, 2)]
    assert render(t, items=items, tick=tick) == "[3][1][2]"
    items.insert(1, {"id": 4})
    backend.reset()
    assert render(t, items=items, tick=tick) == "[3][4][1][2]"
    assert tick.count == {3: 1, 1: 1, 2: 1, 4: 1}
    assert backend.calls[backend.read] == 1  # every key in one round trip
    assert backend.calls[backend.write] == 1  # the one miss written back in one
    backend.reset()
    render(t, items=items, tick=tick)
    assert backend.calls == {backend.read: 1}


def test_cache_each_shares_keys_with_cache_fragment_in_a_loop(
    make_env: MakeEnv, tick: Tick, cache: FragmentCache
) -> None:
    env = make_env()
    each = template(
        env,
        "{% cache_each 300 card p in items p %}{{ tick('each') }}{% endcache_each %}",
    )
    loop = template(
        env,
        "{% for p in items %}{% cache_fragment 300 card p %}{{ tick('loop') }}{% endcache_fragment %}{% endfor %}",
    )
    assert render(each, items=[5, 6], tick=tick) == "eacheach"
    assert render(loop, items=[5, 6], tick=tick) == "eacheach"
    invalidate_fragment("card", "5", cache=cache)  # a URL kwarg is a string
    assert render(loop, items=[5, 6], tick=tick) == "loopeach"
    invalidate_fragment("card", 6, cache=cache)
    assert render(each, items=[5, 6], tick=tick) == "loopeach"


def test_cache_each_many_vary_values_and_empty(make_env: MakeEnv, tick: Tick) -> None:
    t = template(
        make_env(),
        "{% cache_each 300 row r in rows r.id, lang tags='rows' %}{{ r.id }}{{ lang }}{% endcache_each %}.",
    )
    assert render(t, rows=[{"id": 1}, {"id": 2}], lang="en") == "1en2en."
    assert render(t, rows=[{"id": 1}], lang="fr") == "1fr."
    assert render(t, rows=[], lang="fr") == "."


def test_cache_each_if_false_renders_uncached(make_env: MakeEnv, tick: Tick) -> None:
    t = template(
        make_env(),
        "{% cache_each 300 c p in items p if cached %}{{ tick(p) }}{% endcache_each %}",
    )
    render(t, items=[1, 2], tick=tick, cached=False)
    render(t, items=[1, 2], tick=tick, cached=False)
    assert tick.count == {1: 2, 2: 2}


# -- invalidation -----------------------------------------------------------------


def test_invalidate_tag_and_key_for(
    make_env: MakeEnv, tick: Tick, cache: FragmentCache
) -> None:
    env = make_env()
    page = template(
        env, "{% cache_fragment 300 card pid %}{{ tick(pid) }}{% endcache_fragment %}"
    )
    clear = template(env, "[{% invalidate_fragment card pid %}]")
    key = template(env, "{% cache_key_for card pid %}")
    render(page, pid=1, tick=tick)
    render(page, pid=2, tick=tick)
    assert render(clear, pid=1) == "[]"
    render(page, pid=1, tick=tick)
    render(page, pid=2, tick=tick)
    assert tick.count == {1: 2, 2: 1}
    assert render(key, pid=1) == cache.key_for("card", "1")


def test_invalidate_all_and_tags(
    make_env: MakeEnv, tick: Tick, cache: FragmentCache
) -> None:
    env = make_env()
    card = template(
        env,
        "{% cache_fragment 300 card p tags=['products', 'p-' ~ p] %}{{ tick('card' ~ p) }}{% endcache_fragment %}",
    )
    menu = template(
        env,
        "{% cache_fragment 300 menu tags='nav' %}{{ tick('menu') }}{% endcache_fragment %}",
    )

    def all_pages() -> None:
        for p in (1, 2):
            render(card, p=p, tick=tick)
        render(menu, tick=tick)

    all_pages()
    assert cache.invalidate_all("card")
    all_pages()
    assert tick.count == {"card1": 2, "card2": 2, "menu": 1}
    assert cache.invalidate_tags("p-2")
    all_pages()
    assert tick.count == {"card1": 2, "card2": 3, "menu": 1}
    assert cache.invalidate_tags("products", "nav")
    all_pages()
    assert tick.count == {"card1": 3, "card2": 4, "menu": 2}


def test_bad_tags_value_is_a_clear_error(make_env: MakeEnv) -> None:
    env = make_env(
        {"t.html": "{% cache_fragment 300 x tags=tags %}{% endcache_fragment %}"}
    )
    with pytest.raises(
        TemplateRuntimeError, match=r"tags= must be .* 't.html', line 1"
    ):
        render(env.get_template("t.html"), tags=[1, 2])


def test_a_counter_lost_to_eviction_never_revives_an_old_entry(
    make_env: MakeEnv, tick: Tick, cache: FragmentCache
) -> None:
    from jinja_fragcache.keys import name_version_key, variant_version_key

    t = template(
        make_env(),
        "{% cache_fragment 300 card 1 %}{{ tick('x') }}{% endcache_fragment %}",
    )
    render(t, tick=tick)
    cache.backend.delete(name_version_key("card", prefix=cache.prefix))
    render(t, tick=tick)
    cache.backend.delete(variant_version_key(cache.key_for("card", 1)))
    render(t, tick=tick)
    render(t, tick=tick)
    assert tick.count == {"x": 3}


def test_invalidation_racing_a_render_is_not_lost(
    make_env: MakeEnv, cache: FragmentCache
) -> None:
    # The data changes and is invalidated while the old data is rendering:
    # the entry written afterwards must not be served.
    data = {"v": "old"}

    def read() -> str:
        value = data["v"]
        data["v"] = "new"
        cache.invalidate_all("racy")
        return value

    t = template(
        make_env(), "{% cache_fragment 300 racy %}{{ read() }}{% endcache_fragment %}"
    )
    assert render(t, read=read) == "old"
    assert render(t, read=lambda: data["v"]) == "new"


# -- Russian dolls ----------------------------------------------------------------

NESTED = {
    "page.html": (
        "{% cache_fragment 300 page %}<{{ tick('page') }}"
        "{% for p in products %}"
        "{% cache_fragment 300 product p.id tags='p-' ~ p.id %}({{ tick('product' ~ p.id) }}"
        "{% cache_fragment 300 price p.id %}{{ tick('price' ~ p.id) }}{% endcache_fragment %}"
        "){% endcache_fragment %}"
        "{% endfor %}>{% endcache_fragment %}"
    )
}
PRODUCTS = [{"id": 1}, {"id": 2}]


@pytest.mark.parametrize(
    ("invalidate", "rerendered"),
    [
        (lambda c: c.invalidate("price", 1), {"page", "product1", "price1"}),
        (
            lambda c: c.invalidate_all("price"),
            {"page", "product1", "product2", "price1", "price2"},
        ),
        (lambda c: c.invalidate_tags("p-1"), {"page", "product1"}),
    ],
    ids=["variant", "name", "tag"],
)
def test_outer_fragment_rerenders_after_inner_is_invalidated(
    make_env: MakeEnv,
    tick: Tick,
    cache: FragmentCache,
    backend: CountingBackend,
    invalidate: Callable[[FragmentCache], object],
    rerendered: set[str],
) -> None:
    page = make_env(NESTED).get_template("page.html")
    expected = "<page(product1price1)(product2price2)>"
    assert render(page, products=PRODUCTS, tick=tick) == expected
    backend.reset()
    assert render(page, products=PRODUCTS, tick=tick) == expected
    # Entry and own counters, then nested ones; a backend that claims reads
    # the nested ones in the same trip.
    assert backend.calls == {backend.read: 1 if backend.compound else 2}
    invalidate(cache)
    assert render(page, products=PRODUCTS, tick=tick) == expected
    assert render(page, products=PRODUCTS, tick=tick) == expected
    # Exactly the invalidated fragments and those around them rendered again;
    # the untouched ones stayed cached.
    assert {label for label, n in tick.count.items() if n == 2} == rerendered
    assert set(tick.count.values()) <= {1, 2}


def test_nested_checks_take_one_round_trip_more_at_most_however_deep(
    make_env: MakeEnv, tick: Tick, backend: CountingBackend, cache: FragmentCache
) -> None:
    source = "{{ tick('core') }}"
    for depth in range(6):
        source = f"{{% cache_fragment 300 level{depth} %}}[{source}]{{% endcache_fragment %}}"
    env = make_env()
    t = template(env, source)
    # A site up and running: a near cache's lookup connection registered,
    # else the first render's writes are echoed, and may reach the second.
    render(template(env, "{% cache_fragment 300 up %}{% endcache_fragment %}"))
    near_quiet(backend)
    render(t, tick=tick)
    backend.reset()
    with trips() as sent:
        assert render(t, tick=tick) == "[" * 6 + "core" + "]" * 6
    if getattr(backend.inner, "near", None) is None:
        assert backend.calls == {backend.read: 1 if backend.compound else 2}
    else:  # what it holds, nested counters too, is read in no trip
        lookups = [name for name in sent if name != b"CLIENT"]  # a new loop's
        assert len(lookups) <= 1, sent
    cache.invalidate_all("level0")  # the innermost
    render(t, tick=tick)
    assert tick.count == {"core": 2}


# -- template digests -------------------------------------------------------------


def test_editing_a_block_invalidates_its_own_entries(
    make_env: MakeEnv, cache: FragmentCache
) -> None:
    before = make_env(
        {"p.html": "{% cache_fragment 300 box %}old{% endcache_fragment %}"}
    )
    assert render(before.get_template("p.html")) == "old"
    outside = make_env(
        {"p.html": "intro\n{% cache_fragment 300 box %}old{% endcache_fragment %}"}
    )
    assert (
        render(outside.get_template("p.html")) == "intro\nold"
    )  # rest edited: still a hit
    after = make_env(
        {"p.html": "{% cache_fragment 300 box %}new{% endcache_fragment %}"}
    )
    assert render(after.get_template("p.html")) == "new"


def test_another_template_shares_the_entry(make_env: MakeEnv) -> None:
    env = make_env(
        {
            "a.html": "{% cache_fragment 300 box %}from a{% endcache_fragment %}",
            "b.html": "{% cache_fragment 300 box %}from b{% endcache_fragment %}",
        }
    )
    assert render(env.get_template("a.html")) == "from a"
    assert render(env.get_template("b.html")) == "from a"


def test_editing_an_included_template_invalidates(make_env: MakeEnv) -> None:
    page = (
        "{% cache_fragment 300 box %}{% include 'part.html' %}{% endcache_fragment %}"
    )
    before = make_env({"p.html": page, "part.html": "v1"})
    assert render(before.get_template("p.html")) == "v1"
    same = make_env({"p.html": page, "part.html": "v1"})
    assert render(same.get_template("p.html")) == "v1"
    after = make_env({"p.html": page, "part.html": "v2"})
    assert render(after.get_template("p.html")) == "v2"


# -- configuration ------------------------------------------------------------------


@pytest.fixture
def fresh_default() -> Iterator[FragmentCache]:
    set_default_cache(None)
    yield get_default_cache()
    set_default_cache(None)


def test_unconfigured_environment_uses_the_process_default(
    enable_async: bool, fresh_default: FragmentCache, tick: Tick
) -> None:
    env = Environment(extensions=[FragmentCacheExtension], enable_async=enable_async)
    assert env.fragment_cache is None  # type: ignore[attr-defined]
    t = env.from_string(
        "{% cache_fragment 300 card p %}{{ tick(p) }}{% endcache_fragment %}"
    )
    render(t, p=1, tick=tick)
    render(t, p=1, tick=tick)
    assert isinstance(fresh_default.backend, MemoryBackend)
    assert invalidate_fragment("card", 1)  # no cache argument needed
    render(t, p=1, tick=tick)
    assert tick.count == {1: 2}
    assert fresh_default.stats()["card"]["hits"] == 1


class _Person:
    """A plain object: its str() is the default repr, an address."""

    def __init__(self, name: str) -> None:
        self.name = name


def test_default_repr_vary_is_never_cached(
    make_env: MakeEnv, cache: FragmentCache, backend: CountingBackend
) -> None:
    # CPython hands a freed object's address to the next one, so keyed by
    # str() carol would be served alice's card.
    t = template(
        make_env(),
        "{% cache_fragment 300 card p %}{{ p.name }}{% endcache_fragment %}",
    )
    for name in ("alice", "bob", "carol"):
        with pytest.warns(FragmentCacheWarning, match=r"card.*line 1.*no identity"):
            assert render(t, p=_Person(name)) == name
    assert backend.calls.get("set_many", 0) == 0


def test_default_repr_vary_is_an_error_under_debug(
    make_env: MakeEnv, cache: FragmentCache
) -> None:
    cache.debug = True
    t = template(
        make_env(),
        "\n{% cache_fragment 300 card p %}{{ p.name }}{% endcache_fragment %}",
    )
    with pytest.raises(TemplateRuntimeError, match=r"no identity.*line 2"):
        render(t, p=_Person("alice"))


def test_undefined_vary_is_not_shared(
    make_env: MakeEnv, cache: FragmentCache, backend: CountingBackend
) -> None:
    # Undefined renders as "": every tenant would share one variant.
    cache.debug = True  # only warned about, even under debug
    t = template(
        make_env(),
        "{% cache_fragment 300 menu tenant %}{{ who }}{% endcache_fragment %}",
    )
    with pytest.warns(FragmentCacheWarning, match="'tenant' is undefined"):
        assert render(t, who="acme") == "acme"
    with pytest.warns(FragmentCacheWarning):
        assert render(t, who="globex") == "globex"
    assert backend.calls.get("set_many", 0) == 0


def test_cache_each_caches_the_items_that_have_an_identity(
    make_env: MakeEnv, cache: FragmentCache
) -> None:
    t = template(
        make_env(),
        "{% cache_each 300 row item in items item.key %}"
        "[{{ item.name }}]{% endcache_each %}",
    )
    items = [{"key": 1, "name": "a"}, {"key": _Person("x"), "name": "b"}]
    with pytest.warns(FragmentCacheWarning):
        assert render(t, items=items) == "[a][b]"
    items[0]["name"] = "changed"  # the first item is served from the cache
    items[1]["name"] = "live"
    with pytest.warns(FragmentCacheWarning):
        assert render(t, items=items) == "[a][live]"


def test_objects_are_keyed_by_their_identity(
    make_env: MakeEnv, cache: FragmentCache
) -> None:
    class User:
        def __init__(self, pk: int, name: str) -> None:
            self.pk, self.name = pk, name

        def __str__(self) -> str:
            return self.name

    cache.identity.register(User, lambda user: f"user:{user.pk}")
    t = template(
        make_env(),
        "{% cache_fragment 300 greeting user %}Hi {{ user.pk }}{% endcache_fragment %}",
    )
    assert render(t, user=User(1, "AnonymousUser")) == "Hi 1"
    assert render(t, user=User(2, "AnonymousUser")) == "Hi 2"  # same str()
    assert render(t, user="AnonymousUser") == "Hi "  # a plain string
    assert cache.invalidate("greeting", User(1, "someone else"))
    assert render(t, user=User(1, "AnonymousUser")) == "Hi 1"
    assert cache.stats()["greeting"]["misses"] == 4


def test_async_never_stores_a_coroutine(
    make_env: MakeEnv, cache: FragmentCache
) -> None:
    t = template(
        make_env(), "{% cache_fragment 300 a %}{{ 6 * 7 }}{% endcache_fragment %}"
    )
    render(t)
    raw = cache.backend.get_many([cache.key_for("a")])[0] or b""
    entry = Entry.decode(raw)  # kept as it is by an in-process backend
    assert type(entry.body) is str and entry.body == "42"
    assert render(t) == "42"
    assert not re.search(rb"coroutine|generator", entry.encode())


def test_async_rendering_uses_only_async_backend_methods(
    make_env: MakeEnv,
    enable_async: bool,
    backend: CountingBackend,
    cache: FragmentCache,
) -> None:
    env = make_env(NESTED)
    page = env.get_template("page.html")
    render(page, products=PRODUCTS, tick=Tick())
    cache.invalidate_all("price")
    backend.reset()
    render(page, products=PRODUCTS, tick=Tick())
    render(template(env, "{% invalidate_fragment price 1 %}"))
    assert set(backend.called_async) == {enable_async}


def test_cache_each_inside_loops_blocks_and_macros(
    make_env: MakeEnv, tick: Tick
) -> None:
    env = make_env(
        {
            "base.html": "<{% block content %}{% endblock %}>",
            "page.html": (
                "{% extends 'base.html' %}{% block content %}"
                "{% macro cards(xs) %}{% cache_each 300 card p in xs p %}{{ tick(p) }}{% endcache_each %}{% endmacro %}"
                "{% for cat in cats %}{% cache_each 300 row p in cat p %}{{ loop.index }}.{{ p }} {% endcache_each %}{% endfor %}"
                "|{{ cards([7, 8]) }}{{ p is defined }}{% endblock %}"
            ),
        }
    )
    page = env.get_template("page.html")
    expected = "<1.a 1.b 2.c |78False>"
    assert render(page, cats=[["a", "b"], ["c"]], tick=tick) == expected
    assert render(page, cats=[["a", "b"], ["c"]], tick=tick) == expected
    assert tick.count == {7: 1, 8: 1}


def test_cache_each_vary_cannot_use_loop(make_env: MakeEnv) -> None:
    env = make_env(
        {
            "t.html": "{% for c in cs %}\n{% cache_each 300 r p in c p, loop.index %}{% endcache_each %}{% endfor %}"
        }
    )
    with pytest.raises(TemplateSyntaxError, match="cannot use 'loop'") as info:
        env.get_template("t.html")
    assert info.value.lineno == 2


def test_cache_each_accepts_any_iterable_once(make_env: MakeEnv, tick: Tick) -> None:
    t = template(
        make_env(),
        "{% cache_each 300 gen p in items p %}{{ tick(p) }}{% endcache_each %}",
    )
    assert render(t, items=iter([1, 2, 3]), tick=tick) == "123"
    assert render(t, items=(n for n in [1, 2, 3]), tick=tick) == "123"
    assert tick.count == {1: 1, 2: 1, 3: 1}


def test_fragment_cache_may_be_a_callable_read_at_each_render(
    enable_async: bool, tick: Tick
) -> None:
    caches = [FragmentCache(MemoryBackend()), FragmentCache(MemoryBackend())]
    current = [caches[0]]
    env = Environment(extensions=[FragmentCacheExtension], enable_async=enable_async)
    env.fragment_cache = lambda: current[0]  # type: ignore[attr-defined]
    t = env.from_string(
        "{% cache_fragment 300 f %}{{ tick('x') }}{% endcache_fragment %}"
    )
    render(t, tick=tick)
    render(t, tick=tick)
    current[0] = caches[1]  # settings changed: the other cache, a miss
    render(t, tick=tick)
    assert tick.count == {"x": 2}
    assert caches[1].stats()["f"]["misses"] == 1


NESTED_CONDITION = (
    "{% cache_fragment 300 page %}"
    "{% cache_fragment 300 menu if not staff %}{{ 'staff menu' if staff else 'public menu' }}"
    "{% endcache_fragment %}{% endcache_fragment %}"
)


@pytest.mark.parametrize("staff_first", [True, False])
def test_an_inner_that_did_not_cache_is_never_frozen_into_its_outer(
    make_env: MakeEnv, cache: FragmentCache, staff_first: bool
) -> None:
    t = template(make_env(), NESTED_CONDITION)
    order = [True, False] if staff_first else [False, True]
    for staff in order + order:
        assert render(t, staff=staff) == ("staff menu" if staff else "public menu")


@pytest.mark.parametrize("staff_first", [True, False])
def test_an_inner_in_an_included_template_is_never_frozen_into_its_outer(
    make_env: MakeEnv, staff_first: bool
) -> None:
    env = make_env(
        {
            "page.html": "{% cache_fragment 300 page %}{% include 'menu.html' %}"
            "{% endcache_fragment %}",
            "menu.html": NESTED_CONDITION.removeprefix(
                "{% cache_fragment 300 page %}"
            ).removesuffix("{% endcache_fragment %}"),
        }
    )
    page = env.get_template("page.html")
    order = [True, False] if staff_first else [False, True]
    for staff in order + order:
        assert render(page, staff=staff) == ("staff menu" if staff else "public menu")


def test_under_debug_an_outer_left_uncached_names_both(
    make_env: MakeEnv, cache: FragmentCache
) -> None:
    cache.debug = True
    t = template(make_env(), NESTED_CONDITION)
    with pytest.warns(FragmentCacheWarning, match="'page' is not cached.*'menu'"):
        render(t, staff=True)


LIFETIMES = (
    "{% cache_fragment 300 outer %}[{{ tick.outer }}]"
    "{% cache_fragment inner_timeout inner %}({{ tick.inner }}){% endcache_fragment %}"
    "{% endcache_fragment %}"
)


def test_an_outer_expires_no_later_than_the_soonest_inner(
    make_env: MakeEnv, cache: FragmentCache
) -> None:
    # The spec's "inner cache: 1 minute, refreshes more often" inside 300 s.
    cache.stale_grace = 0
    t = template(make_env(), LIFETIMES)
    tick = Ticks()
    assert render(t, tick=tick, inner_timeout=0.3) == "[1](1)"
    assert render(t, tick=tick, inner_timeout=0.3) == "[1](1)"
    time.sleep(0.5)
    assert render(t, tick=tick, inner_timeout=0.3) == "[2](2)"


def test_a_never_expiring_inner_changes_nothing(
    make_env: MakeEnv, cache: FragmentCache
) -> None:
    t = template(make_env(), LIFETIMES)
    tick = Ticks()
    assert render(t, tick=tick, inner_timeout=None) == "[1](1)"
    entry = Entry.decode(cache.backend.get_many([cache.key_for("outer")])[0] or b"")
    assert entry.soft_expiry is not None and entry.soft_expiry > time.time() + 200


def test_a_conditional_inner_in_cache_each_keeps_its_meaning(
    make_env: MakeEnv, cache: FragmentCache
) -> None:
    t = template(
        make_env(),
        "{% cache_each 300 row item in items item %}"
        "{% cache_fragment 300 badge if not staff %}{{ 'S' if staff else 'P' }}"
        "{% endcache_fragment %}{% endcache_each %}",
    )
    for staff in (False, True, False, True):
        assert render(t, items=[1, 2], staff=staff) == ("SS" if staff else "PP")


CONTENTS = {
    "page.html": (
        "{% cache_fragment 300 page tags=['site'] %}"
        "{% cache_fragment 300 card 7 tags=['product:7'] %}card{% endcache_fragment %}"
        "{% cache_each 300 row p in [1] p tags=['rows'] %}{{ p }}{% endcache_each %}"
        "{% include 'menu.html' %}{% endcache_fragment %}"
    ),
    "menu.html": "{% cache_fragment 300 menu %}menu{% endcache_fragment %}",
}


def _counters(cache: FragmentCache) -> set[str]:
    """The counters the page of :data:`CONTENTS` depends on, by the key rules."""
    return {
        variant_version_key(cache.key_for("page")),
        variant_version_key(cache.key_for("card", 7)),
        variant_version_key(cache.key_for("menu")),
        variant_version_key(cache.key_for("row", 1)),
        *(
            name_version_key(n, prefix=cache.prefix)
            for n in ("page", "card", "menu", "row")
        ),
        *(
            tag_version_key(t, prefix=cache.prefix)
            for t in ("site", "product:7", "rows")
        ),
    }


def test_an_outer_entry_records_every_tag_name_and_variant_inside(
    make_env: MakeEnv, cache: FragmentCache
) -> None:
    page = make_env(CONTENTS).get_template("page.html")
    with page_contents() as miss:
        assert render(page) == "card1menu"
    entry = Entry.decode(cache.backend.get_many([cache.key_for("page")])[0] or b"")
    assert set(entry.versions) == _counters(cache)
    # A hit on the outer alone knows all it contains, nested ones included.
    with page_contents() as hit:
        assert render(page) == "card1menu"
    assert set(miss.counters) == set(hit.counters) == _counters(cache)
    assert not hit.uncached


def test_page_contents_hold_fragments_that_rendered_uncached(
    make_env: MakeEnv, cache: FragmentCache
) -> None:
    t = template(
        make_env(),
        "{% cache_fragment 300 a if flag %}A{% endcache_fragment %}"
        "{% cache_fragment 0 b %}B{% endcache_fragment %}",
    )
    with page_contents() as contents:
        assert render(t, flag=False) == "AB"
    assert contents.uncached
    assert {
        name_version_key("a", prefix=cache.prefix),
        name_version_key("b", prefix=cache.prefix),
        variant_version_key(cache.key_for("a")),
    } <= set(contents.counters)


def test_an_overlay_renders_with_its_own_cache_and_mode() -> None:
    import asyncio

    base = Environment(extensions=[FragmentCacheExtension])
    base.fragment_cache = FragmentCache(MemoryBackend())  # type: ignore[attr-defined]
    overlay = base.overlay(enable_async=True)
    overlay.fragment_cache = FragmentCache(MemoryBackend())  # type: ignore[attr-defined]
    source = "{% cache_fragment 60 box n %}{{ text }}{% endcache_fragment %}"
    for _ in range(2):  # a miss, then a remembered hit
        assert (
            asyncio.run(overlay.from_string(source).render_async(n=1, text="overlay"))
            == "overlay"
        )
        assert base.from_string(source).render(n=1, text="base") == "base"
    assert len(overlay.fragment_cache.backend) == len(base.fragment_cache.backend) > 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_an_empty_hit_outputs_nothing_and_renders_nothing(use_async: bool) -> None:
    import asyncio

    env = Environment(extensions=[FragmentCacheExtension], enable_async=use_async)
    env.fragment_cache = FragmentCache(MemoryBackend())  # type: ignore[attr-defined]
    renders: list[int] = []
    page = env.from_string(
        "<{% cache_fragment 60 empty %}{{ count() }}{% endcache_fragment %}>"
        "<{% cache_each 60 card n in items n %}{{ count() }}{% endcache_each %}>"
    )
    for _ in range(3):
        context = {"count": lambda: renders.append(1) or "", "items": [1, 2]}
        if use_async:
            assert asyncio.run(page.render_async(context)) == "<><>"
        else:
            assert page.render(context) == "<><>"
    assert len(renders) == 3  # the first render only: one fragment, two cards
