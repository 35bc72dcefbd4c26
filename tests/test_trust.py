"""Bad input stays local, and locks never outlive their holder: on a real
redis-server and a real memcached."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from jinja2 import Environment, TemplateRuntimeError, TemplateSyntaxError

from jinja_fragcache import (
    FragmentCache,
    FragmentCacheExtension,
    FragmentCacheWarning,
    MemoryBackend,
)
from jinja_fragcache.entry import Entry
from jinja_fragcache.keys import lock_key

from .support import render


@pytest.fixture(params=["memory", "redis"])
def cache(request: pytest.FixtureRequest, unique_prefix: str) -> FragmentCache:
    backend = (
        MemoryBackend()
        if request.param == "memory"
        else request.getfixturevalue("redis_backend")
    )
    return FragmentCache(backend, prefix=unique_prefix)


def environment(cache: FragmentCache, enable_async: bool = False) -> Environment:
    env = Environment(extensions=[FragmentCacheExtension], enable_async=enable_async)
    env.fragment_cache = cache  # type: ignore[attr-defined]
    return env


@pytest.mark.parametrize("enable_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("timeout", [10**400, 1e16])
def test_a_timeout_no_backend_takes_fails_its_own_fragment_only(
    cache: FragmentCache, enable_async: bool, timeout: object
) -> None:
    env = environment(cache, enable_async)
    bad = env.from_string(
        "\n\n{% cache_fragment t huge %}x{% endcache_fragment %}", globals={}
    )
    good = env.from_string("{% cache_fragment 60 fine %}{{ n }}{% endcache_fragment %}")
    assert render(good, n=1) == "1"
    with pytest.raises(TemplateRuntimeError, match=r"at most .* line 3"):
        render(bad, t=timeout)
    assert not cache.breaker.is_open
    assert render(good, n=2) == "1"  # still cached
    assert cache.stats()["fine"]["hits"] == 1


def test_a_literal_timeout_too_large_is_a_syntax_error() -> None:
    env = Environment(extensions=[FragmentCacheExtension])
    with pytest.raises(TemplateSyntaxError, match="at most") as caught:
        env.from_string("\n{% cache_fragment 10**400 huge %}x{% endcache_fragment %}")
    assert caught.value.lineno == 2


@pytest.mark.parametrize("enable_async", [False, True], ids=["sync", "async"])
def test_a_lone_surrogate_is_cached_as_it_was(
    cache: FragmentCache, enable_async: bool
) -> None:
    env = environment(cache, enable_async)
    t = env.from_string("{% cache_fragment 60 odd %}{{ text }}{% endcache_fragment %}")
    assert render(t, text="a\udcffb") == "a\udcffb"
    assert render(t, text="other") == "a\udcffb"
    assert cache.stats()["odd"]["hits"] == 1
    assert Entry.decode(Entry("a\udcffb", None, "t\udcff").encode()).template == (
        "t\udcff"
    )


def test_a_waiter_takes_over_a_lock_its_holder_released(
    redis_backend: Any, unique_prefix: str
) -> None:
    cache = FragmentCache(redis_backend, prefix=unique_prefix, lock_wait=30)
    env = environment(cache)
    t = env.from_string("{% cache_fragment 60 slow %}{{ n }}{% endcache_fragment %}")
    lock = lock_key(cache.key_for("slow"))
    assert redis_backend.add(lock, b"holder", 30)  # another renderer holds it

    def give_up() -> None:
        time.sleep(0.3)
        redis_backend.delete(lock)  # ...and gives up without writing

    threading.Thread(target=give_up).start()
    start = time.monotonic()
    assert render(t, n=1) == "1"
    assert time.monotonic() - start < 10  # far below lock_wait
    assert render(t, n=2) == "1"  # this request stored it
    assert redis_backend.get_many([lock]) == [None]


@pytest.mark.django_db
def test_a_failed_write_releases_its_lock_and_keeps_the_breaker_closed(
    settings: Any, memcached_location: str
) -> None:
    # memcached refuses an item over 1 MB: that write fails, the server is up.
    from django.template import engines

    from django_bridge import get_fragment_cache

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
            "LOCATION": memcached_location,
        }
    }
    settings.FRAGCACHE = {"KEY_PREFIX": "w" + uuid.uuid4().hex[:10]}
    template = engines["django"].from_string(
        "{% load cache_tags %}{% cache_fragment 60 big %}{{ body }}{% endcache_fragment %}"
        "{% cache_fragment 60 small %}{{ n }}{% endcache_fragment %}"
    )
    body = "x" * 2_000_000
    assert template.render({"body": body, "n": 1}) == body + "1"
    cache = get_fragment_cache()
    assert not cache.breaker.is_open
    assert cache.backend.get_many([lock_key(cache.key_for("big"))]) == [None]
    assert template.render({"body": "y", "n": 2}) == "y1"  # small still cached
    assert cache.stats()["big"]["errors"] == 1


def test_a_nul_in_a_body_is_kept_and_never_read_as_a_hole(cache: FragmentCache) -> None:
    env = environment(cache)
    t = env.from_string("{% cache_fragment 60 nul %}{{ text }}{% endcache_fragment %}")
    text = "a\x00csrf_token\x00b\x00"
    assert render(t, text=text) == text
    assert render(t, text="other") == text
    assert cache.stats()["nul"]["hits"] == 1


@pytest.mark.parametrize("enable_async", [False, True], ids=["sync", "async"])
def test_under_debug_twins_that_render_differently_are_named(
    enable_async: bool,
) -> None:
    from jinja2 import DictLoader

    cache = FragmentCache(MemoryBackend(), debug=True)
    env = Environment(
        extensions=[FragmentCacheExtension],
        enable_async=enable_async,
        loader=DictLoader(
            {
                "home.html": "{% cache_fragment 60 side %}<b>{{ n }}</b>{% endcache_fragment %}",
                "same.html": "{% cache_fragment 60 side %}<b>{{n}}</b>{% endcache_fragment %}",
                "other.html": "{% cache_fragment 60 side %}<i>{{ n }}</i>{% endcache_fragment %}",
            }
        ),
    )
    env.fragment_cache = cache  # type: ignore[attr-defined]
    assert render(env.get_template("home.html"), n=1) == "<b>1</b>"
    assert render(env.get_template("same.html"), n=1) == "<b>1</b>"  # no warning
    with pytest.warns(FragmentCacheWarning, match="'other.html' is served the entry"):
        assert render(env.get_template("other.html"), n=1) == "<b>1</b>"


@pytest.mark.parametrize("garbage", [b"\xff\xfe not a counter", b"12 34", b"x" * 30])
def test_a_corrupt_version_counter_is_a_miss_and_is_replaced(
    redis_backend: Any, unique_prefix: str, garbage: bytes
) -> None:
    from jinja_fragcache.keys import name_version_key

    cache = FragmentCache(redis_backend, prefix=unique_prefix)
    t = environment(cache).from_string(
        "{% cache_fragment 60 card %}{{ n }}{% endcache_fragment %}"
    )
    assert render(t, n=1) == "1"
    counter = name_version_key("card", prefix=unique_prefix)
    redis_backend.set(counter, garbage, None)  # another program wrote here
    assert render(t, n=2) == "2"  # a miss, and the page renders
    assert render(t, n=3) == "2"  # cached again under a replaced counter
    assert redis_backend.get_many([counter])[0].isdigit()
    assert cache.stats()["card"]["errors"] == 1
