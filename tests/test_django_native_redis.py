"""The bridge on Redis runs the core's RedisBackend on the Django cache's own
connection pool: django-redis (plain DefaultClient) and Django's RedisCache.

Every test here runs on the redis-server of the session (``redis_url``).
"""

from __future__ import annotations

import logging
import pickle
import time
import uuid
from collections.abc import Callable
from typing import Any

import jinja2
import pytest
from django.core.cache import caches
from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.test import Client
from django.urls import path

from django_bridge import get_fragment_cache, invalidate_fragment
from django_bridge.backend import DjangoCacheBackend
from django_bridge.jinja2 import environment
from django_bridge.selection import DjangoRedisBackend, native_prefix
from jinja_fragcache import RedisBackend
from jinja_fragcache.entry import MAGIC
from jinja_fragcache.keys import name_version_key
from tests.djangoapp.urls import dtl_page

from .support import run, trips

KINDS = {
    "django-redis": "django_redis.cache.RedisCache",
    "django": "django.core.cache.backends.redis.RedisCache",
}


def jinja_page(request: HttpRequest) -> HttpResponse:
    source = engines["jinja2"].get_template("card.jinja")
    return HttpResponse(source.render({"pk": request.GET.get("pk", "1")}, request))


def save_card(request: HttpRequest, pk: int) -> HttpResponse:
    invalidate_fragment("card", pk)
    return HttpResponse("saved")


urlpatterns = [
    path("jinja/", jinja_page),
    path("dtl/", dtl_page),
    path("save/<int:pk>/", save_card),
]


def caches_for(kind: str, url: str, **extra: Any) -> dict[str, Any]:
    return {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "fragments": {"BACKEND": KINDS[kind], "LOCATION": url, **extra},
    }


def writing_client(kind: str, alias: str = "fragments") -> Any:
    """The ``redis.Redis`` the Django cache itself writes with."""
    cache = caches[alias]
    if kind == "django-redis":
        return cache.client.get_client(write=True)
    return cache._cache.get_client(write=True)


@pytest.fixture(params=list(KINDS))
def kind(request: pytest.FixtureRequest, settings: Any, redis_url: str) -> str:
    """The fragment cache on a fresh prefix of django-redis or Django's own
    RedisCache, alias ``fragments``."""
    settings.CACHES = caches_for(request.param, redis_url)
    settings.FRAGCACHE = {"CACHE": "fragments", "KEY_PREFIX": fresh_prefix()}
    settings.ROOT_URLCONF = __name__
    return str(request.param)


def fresh_prefix() -> str:
    return "nr" + uuid.uuid4().hex[:10]


def test_the_backend_is_a_redis_backend_on_the_caches_own_pool(kind: str) -> None:
    backend = get_fragment_cache().backend
    assert isinstance(backend, RedisBackend)
    assert backend.client.connection_pool is writing_client(kind).connection_pool
    assert backend.near is not None  # RedisBackend's default
    assert backend.alias == "fragments"  # type: ignore[attr-defined]


def test_a_dtl_and_a_jinja2_fragment_share_keys_and_a_view_invalidates_both(
    kind: str,
) -> None:
    client = Client()
    assert client.get("/jinja/?pk=4").content.decode().strip() == "card 4 by jinja"
    assert client.get("/dtl/?pk=4").content.decode().strip() == "card 4 by jinja"
    assert client.post("/save/4/").content == b"saved"
    assert client.get("/dtl/?pk=4").content.decode().strip() == "card 4 by dtl"
    assert client.get("/jinja/?pk=4").content.decode().strip() == "card 4 by dtl"


def test_entries_are_the_cores_format_never_pickles(kind: str, redis_url: str) -> None:
    import redis

    Client().get("/dtl/?pk=5")
    cache = get_fragment_cache()
    raw = redis.Redis.from_url(redis_url)
    try:
        entry = raw.get(cache.key_for("card", 5))
        counter = raw.get(name_version_key("card", prefix=cache.prefix))
    finally:
        raw.close()
    assert entry is not None and entry.startswith(MAGIC) and MAGIC == b"FC2 "
    assert b"card 5 by dtl" in entry
    assert counter is not None and counter.isdigit()


#: What unpickling a planted value did.
UNPICKLED: list[str] = []


def _unpickled() -> str:
    UNPICKLED.append("unpickled")
    return "planted"


class Planted:
    """Unpickling it calls :func:`_unpickled`: what an attacker's code would
    do, harmlessly."""

    def __reduce__(self) -> tuple[Callable[[], str], tuple[()]]:
        return _unpickled, ()


@pytest.mark.parametrize("native", [True, False], ids=["native", "adapter"])
def test_a_pickle_planted_under_a_fragment_key_is_never_unpickled(
    kind: str, settings: Any, native: bool
) -> None:
    settings.FRAGCACHE = {**settings.FRAGCACHE, "NATIVE_REDIS": native}
    cache = get_fragment_cache()
    key = cache.key_for("card", 6)
    if not native:
        key = caches["fragments"].make_key(key)  # as the adapter stores it
    writing_client(kind).set(key, pickle.dumps(Planted()))
    UNPICKLED.clear()
    assert Client().get("/dtl/?pk=6").content.decode().strip() == "card 6 by dtl"
    if native:
        assert UNPICKLED == []
        stored = writing_client(kind).get(key)
        assert stored is not None and stored.startswith(MAGIC)  # replaced
    else:  # the control: Django's serializer runs the planted code
        assert UNPICKLED == ["unpickled"]


def test_a_miss_is_two_round_trips_and_a_warm_hit_none(kind: str) -> None:
    template = engines["jinja2"].from_string(
        "<% cache_fragment 300 trip %>x<% endcache_fragment %>"
    )
    backend = get_fragment_cache().backend
    assert isinstance(backend, RedisBackend) and backend.near is not None
    # Once per server and connection, not per render: the scripts loaded, a
    # connection made (HELLO, CLIENT SETINFO).
    engines["django"].from_string(
        "{% load cache_tags %}{% cache_fragment 300 warm %}{% endcache_fragment %}"
    ).render({})
    with trips() as sent:
        assert template.render({}) == "x"
    assert len(sent) == 2, sent  # the claiming script, the writing pipeline
    deadline = time.monotonic() + 10
    while not backend.near.active:
        if time.monotonic() > deadline:
            pytest.fail("the near cache's tracking never started")
        time.sleep(0.01)
    for _ in range(5):
        with trips() as sent:
            assert template.render({}) == "x"
        if not sent:
            break
    assert sent == []


def test_async_rendering_hits_on_the_pools_settings(kind: str) -> None:
    # Django's pools name a sync parser class; the asyncio clients must not.
    ticks: list[int] = []
    env = environment(
        enable_async=True,
        loader=jinja2.DictLoader(
            {"t": "<% cache_fragment 300 box %>{{ tick() }}<% endcache_fragment %>"}
        ),
        block_start_string="<%",
        block_end_string="%>",
    )
    env.globals["tick"] = lambda: ticks.append(1) or len(ticks)
    template = env.get_template("t")
    backend = get_fragment_cache().backend
    assert run(template.render_async(), backend) == "1"
    assert run(template.render_async(), backend) == "1"  # another loop, a hit
    assert ticks == [1]


def test_the_aliases_key_prefix_and_version_keep_sites_apart(
    kind: str, settings: Any, redis_url: str
) -> None:
    prefix = fresh_prefix()
    settings.CACHES = {
        "a": caches_for(kind, redis_url, KEY_PREFIX="site-a")["fragments"],
        "b": caches_for(kind, redis_url, KEY_PREFIX="site-b")["fragments"],
        "b2": caches_for(kind, redis_url, KEY_PREFIX="site-b", VERSION=2)["fragments"],
    }
    settings.FRAGCACHE = {"CACHE": "a", "KEY_PREFIX": prefix}
    jinja = engines["jinja2"].get_template("card.jinja")
    dtl = engines["django"].get_template("card.html")
    assert jinja.render({"pk": 1}).strip() == "card 1 by jinja"
    assert get_fragment_cache().prefix == f"site-a.{prefix}"
    settings.FRAGCACHE = {"CACHE": "b", "KEY_PREFIX": prefix}
    assert dtl.render({"pk": 1}).strip() == "card 1 by dtl"  # not site a's
    assert get_fragment_cache().prefix == f"site-b.{prefix}"
    settings.FRAGCACHE = {"CACHE": "b2", "KEY_PREFIX": prefix}
    assert jinja.render({"pk": 1}).strip() == "card 1 by jinja"  # a new VERSION
    assert get_fragment_cache().prefix == f"site-b.v2.{prefix}"
    settings.FRAGCACHE = {"CACHE": "a", "KEY_PREFIX": prefix}
    assert dtl.render({"pk": 1}).strip() == "card 1 by jinja"  # site a's, kept


class _Cache:
    def __init__(self, key_prefix: str, version: Any) -> None:
        self.key_prefix, self.version = key_prefix, version


@pytest.mark.parametrize(
    ("key_prefix", "version", "expected"),
    [
        ("", 1, "fragcache"),
        ("shop", 1, "shop.fragcache"),
        ("", 3, "v3.fragcache"),
        ("shop", "2", "shop.v2.fragcache"),
        ("my shop:eu", 1, "k{}.fragcache"),
        ("x" * 70, 1, "k{}.fragcache"),
    ],
)
def test_native_prefix(key_prefix: str, version: Any, expected: str) -> None:
    import hashlib

    digest = hashlib.sha256(key_prefix.encode()).hexdigest()[:16]
    folded = native_prefix("fragcache", _Cache(key_prefix, version))
    assert folded == expected.format(digest)
    other = native_prefix("fragcache", _Cache(key_prefix + "!", version))
    assert other != folded


def test_a_prefix_too_long_to_fold_is_one_digest() -> None:
    folded = native_prefix("p" * 60, _Cache("my shop", 1))
    assert len(folded) == 33 and folded.startswith("k")
    assert native_prefix("p" * 60, _Cache("my shop2", 1)) != folded


class JsonishSerializer:
    """A serializer of the user's own for Django's RedisCache."""

    def dumps(self, value: Any) -> bytes:
        return repr(value).encode()

    def loads(self, data: bytes) -> Any:
        return data


@pytest.mark.parametrize(
    ("kind", "options", "reason"),
    [
        (
            "django-redis",
            {"CLIENT_CLASS": "django_redis.client.HerdClient"},
            "HerdClient",
        ),
        (
            "django-redis",
            {"CLIENT_CLASS": "django_redis.client.ShardClient"},
            "ShardClient",
        ),
        (
            "django-redis",
            {"SERIALIZER": "django_redis.serializers.json.JSONSerializer"},
            "SERIALIZER",
        ),
        (
            "django-redis",
            {"COMPRESSOR": "django_redis.compressors.zlib.ZlibCompressor"},
            "COMPRESSOR",
        ),
        ("django", {"serializer": f"{__name__}.JsonishSerializer"}, "serializer"),
    ],
)
def test_other_clients_serializers_and_compressors_keep_the_adapter(
    settings: Any,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    options: dict[str, Any],
    reason: str,
) -> None:
    settings.CACHES = caches_for(kind, redis_url, OPTIONS=options)
    settings.FRAGCACHE = {"CACHE": "fragments", "KEY_PREFIX": fresh_prefix()}
    with caplog.at_level(logging.DEBUG, logger="django_bridge"):
        backend = get_fragment_cache().backend
    assert isinstance(backend, DjangoCacheBackend)
    [record] = [r for r in caplog.records if "keeps the Django cache adapter" in r.msg]
    assert record.levelno == logging.DEBUG
    assert reason in record.getMessage()


def test_native_redis_false_keeps_the_adapter(kind: str, settings: Any) -> None:
    settings.FRAGCACHE = {**settings.FRAGCACHE, "NATIVE_REDIS": False}
    backend = get_fragment_cache().backend
    assert isinstance(backend, DjangoCacheBackend)
    assert Client().get("/dtl/?pk=7").content.decode().strip() == "card 7 by dtl"


@pytest.mark.parametrize(
    ("backend", "location"),
    [
        ("django.core.cache.backends.locmem.LocMemCache", ""),
        ("django.core.cache.backends.dummy.DummyCache", ""),
        ("django.core.cache.backends.filebased.FileBasedCache", "TMP"),
        ("django.core.cache.backends.db.DatabaseCache", "fragments_table"),
        ("django.core.cache.backends.memcached.PyMemcacheCache", "127.0.0.1:1"),
    ],
)
def test_other_django_caches_keep_the_adapter(
    settings: Any, tmp_path: Any, backend: str, location: str
) -> None:
    settings.CACHES = {
        "default": {
            "BACKEND": backend,
            "LOCATION": str(tmp_path) if location == "TMP" else location,
        }
    }
    settings.FRAGCACHE = {"KEY_PREFIX": fresh_prefix()}
    assert isinstance(get_fragment_cache().backend, DjangoCacheBackend)


def test_a_rebuilt_cache_closes_the_near_cache_it_replaced(
    kind: str, settings: Any
) -> None:
    backend = get_fragment_cache().backend
    assert isinstance(backend, DjangoRedisBackend) and backend.near is not None
    engines["jinja2"].from_string(
        "<% cache_fragment 300 c %>x<% endcache_fragment %>"
    ).render({})
    deadline = time.monotonic() + 10
    while not backend.near.active:
        if time.monotonic() > deadline:
            pytest.fail("the near cache's tracking never started")
        time.sleep(0.01)
    settings.FRAGCACHE = {**settings.FRAGCACHE, "KEY_PREFIX": fresh_prefix()}
    assert get_fragment_cache().backend is not backend
    assert not backend.near.active  # its tracking thread and connection end


def _settled(render: Callable[[], str]) -> None:
    """Render until a hit sends nothing: remembered (the writes' echoes of
    this process come back from the server first)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        render()
        with trips() as sent:
            render()
        if not sent:
            return
        time.sleep(0.01)
    pytest.fail("a DTL hit was never answered from memory")


def test_a_dtl_hit_is_remembered_and_a_view_still_invalidates_it(kind: str) -> None:
    source = (
        "{% load cache_tags %}{% cache_fragment 300 card pk %}"
        "{{ label }}{% endcache_fragment %}"
    )
    template = engines["django"].from_string(source)
    cache = get_fragment_cache()
    assert cache.memo is not None
    _settled(lambda: template.render({"pk": 8, "label": "old"}))
    near = cache.backend.near  # type: ignore[attr-defined]
    asked = near.hits + near.misses
    with trips() as sent:
        assert template.render({"pk": 8, "label": "new"}) == "old"
    assert sent == []
    assert near.hits + near.misses == asked  # not even the near cache
    invalidate_fragment("card", 8)
    assert template.render({"pk": 8, "label": "new"}) == "new"


def test_a_remembered_dtl_hit_gives_each_visitor_their_own_csrf_token(
    kind: str,
) -> None:
    import re

    from django.middleware.csrf import (  # type: ignore[attr-defined]
        _does_token_match,
        _get_new_csrf_string,
    )
    from django.test import RequestFactory

    source = (
        "{% load cache_tags %}{% cache_fragment 300 form %}"
        "<form>{% csrf_token %}</form>{% endcache_fragment %}"
    )
    template = engines["django"].from_string(source)
    factory = RequestFactory()

    def visit() -> tuple[str, str]:
        """A page for a visitor of their own, and their secret."""
        secret = _get_new_csrf_string()
        request = factory.get("/")
        request.META["CSRF_COOKIE"] = secret  # as CsrfViewMiddleware sets it
        return template.render({}, request), secret

    _settled(lambda: visit()[0])
    for _ in range(3):
        with trips() as sent:
            page, secret = visit()
        assert sent == []
        token = re.search(r'value="([^"]+)"', page)
        assert token is not None
        assert _does_token_match(token[1], secret)
