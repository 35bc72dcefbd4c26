"""``FRAGCACHE["BACKEND"]`` and ``["OPTIONS"]``: a core backend named by
import path, as Django's ``CACHES`` names its own, and the check
(``fragcache.E004``) for one that cannot be built."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.template import engines

from django_bridge import get_fragment_cache, invalidate_fragment
from django_bridge.selection import DjangoRedisBackend
from jinja_fragcache import MemoryBackend, RedisBackend
from jinja_fragcache.entry import MAGIC

from .support import free_port

REDIS = "jinja_fragcache.backends.redis.RedisBackend"


def fragcache_messages() -> dict[str, str]:
    return {
        message.id: message.msg
        for message in run_checks()
        if message.id and message.id.startswith("fragcache")
    }


def fresh_prefix() -> str:
    return "bs" + uuid.uuid4().hex[:10]


def test_a_redis_backend_from_a_url(settings: Any, redis_url: str) -> None:
    import redis

    settings.FRAGCACHE = {
        "BACKEND": REDIS,
        "OPTIONS": {"url": redis_url, "near_cache": False},
        "KEY_PREFIX": fresh_prefix(),
    }
    cache = get_fragment_cache()
    assert type(cache.backend) is RedisBackend
    assert cache.backend.near is None  # the OPTIONS reached the constructor
    jinja = engines["jinja2"].get_template("card.jinja")
    dtl = engines["django"].get_template("card.html")
    assert jinja.render({"pk": 2}).strip() == "card 2 by jinja"
    assert dtl.render({"pk": 2}).strip() == "card 2 by jinja"  # shared keys
    raw = redis.Redis.from_url(redis_url)
    try:
        entry = raw.get(cache.key_for("card", 2))  # the fragment prefix alone
    finally:
        raw.close()
    assert entry is not None and entry.startswith(MAGIC)
    assert invalidate_fragment("card", 2)
    assert dtl.render({"pk": 2}).strip() == "card 2 by dtl"
    assert "fragcache.E004" not in fragcache_messages()


def test_a_factory_by_path_and_the_alias_is_left_alone(
    settings: Any, redis_url: str
) -> None:
    # The alias is django-redis, yet FRAGCACHE names its own backend.
    settings.CACHES = {
        "default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": redis_url}
    }
    settings.SILENCED_SYSTEM_CHECKS = []
    settings.FRAGCACHE = {
        "BACKEND": f"{REDIS}.from_url",
        "OPTIONS": {"url": redis_url},
        "KEY_PREFIX": fresh_prefix(),
    }
    backend = get_fragment_cache().backend
    assert type(backend) is RedisBackend and not isinstance(backend, DjangoRedisBackend)
    # W002 (the alias has no socket timeout) is about a cache not in use.
    assert fragcache_messages() == {}


def test_options_reach_an_in_process_backend(settings: Any) -> None:
    settings.FRAGCACHE = {
        "BACKEND": "jinja_fragcache.backends.memory.MemoryBackend",
        "OPTIONS": {"max_entries": 3},
        "KEY_PREFIX": fresh_prefix(),
    }
    backend = get_fragment_cache().backend
    assert isinstance(backend, MemoryBackend) and backend.max_entries == 3


def test_a_down_server_is_not_a_configuration_error(settings: Any) -> None:
    # Building connects to nothing: an outage fails open at render time.
    url = f"redis://127.0.0.1:{free_port()}/0"
    settings.FRAGCACHE = {"BACKEND": REDIS, "OPTIONS": {"url": url}}
    assert "fragcache.E004" not in fragcache_messages()
    source = "{% load cache_tags %}{% cache_fragment 300 d %}up{% endcache_fragment %}"
    assert engines["django"].from_string(source).render({}) == "up"


@pytest.mark.parametrize(
    ("backend", "options", "says"),
    [
        ("nosuch.module.Backend", {}, "cannot be imported: No module named 'nosuch'"),
        (
            "jinja_fragcache.backends.redi.RedisBackend",
            {},
            "No module named 'jinja_fragcache.backends.redi'",
        ),
        (
            "jinja_fragcache.backends.redis.RedisBackendd",
            {},
            "has no attribute 'RedisBackendd'",
        ),
        ("jinja_fragcache.backends.redis.TRACKING_NAME", {}, "not a class or a"),
        (
            "jinja_fragcache.backends.memory.MemoryBackend",
            {"max_entires": 3},
            "options given: max_entires): TypeError",
        ),
        (REDIS, {}, "ValueError: RedisBackend needs a client or a url"),
        (REDIS, {"url": "http://127.0.0.1/"}, "could not be built"),
        (
            REDIS,
            {"url": "redis://:s3cret@127.0.0.1:6379/0", "socket_timout": 1},
            "its connections cannot be made",
        ),
        ("collections.OrderedDict", {}, "is not a fragment cache backend"),
        (None, {"url": "redis://127.0.0.1/"}, 'but FRAGCACHE["BACKEND"] is not'),
        (42, {}, "must be an import path"),
        (REDIS, ["redis://127.0.0.1/"], "must be a dict"),
    ],
)
def test_a_backend_that_cannot_be_built(
    settings: Any, backend: Any, options: Any, says: str
) -> None:
    settings.FRAGCACHE = {"BACKEND": backend, "OPTIONS": options}
    messages = fragcache_messages()
    assert set(messages) == {"fragcache.E004"}
    assert says in messages["fragcache.E004"]
    assert "s3cret" not in messages["fragcache.E004"]  # options by name only
    with pytest.raises(ImproperlyConfigured, match="FRAGCACHE"):
        get_fragment_cache()


def test_the_keys_are_known(settings: Any) -> None:
    settings.FRAGCACHE = {
        "BACKEND": "jinja_fragcache.backends.memory.MemoryBackend",
        "OPTIONS": {},
        "NATIVE_REDIS": False,
    }
    assert "fragcache.E001" not in fragcache_messages()
