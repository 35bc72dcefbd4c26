"""Settings of the test site behind Varnish: the test suite's, with the
surrogate-key middleware first and a fragment cache that every process
shares (a Redis whose URL the environment gives)."""

from __future__ import annotations

import os
from typing import Any

from tests.django_settings import *  # noqa: F403
from tests.django_settings import MIDDLEWARE as _MIDDLEWARE

SURROGATE_KEY_MIDDLEWARE = "django_bridge.middleware.SurrogateKeyMiddleware"


def shared_caches(redis_url: str) -> dict[str, Any]:
    """A Django cache on *redis_url*, the same in every process."""
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }


def fragcache(prefix: str, purge_urls: list[str] | None = None) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "KEY_PREFIX": prefix,
        "SURROGATE_KEYS": {"HEADER": "xkey"},
    }
    if purge_urls:
        settings["PURGE"] = {"BACKEND": "varnish", "URLS": purge_urls}
    return settings


MIDDLEWARE = [SURROGATE_KEY_MIDDLEWARE, *_MIDDLEWARE]
# Set by the test that starts the server; the test process itself only
# imports the helpers above.
if "FRAGCACHE_CDN_REDIS_URL" in os.environ:
    CACHES = shared_caches(os.environ["FRAGCACHE_CDN_REDIS_URL"])
    FRAGCACHE = fragcache(os.environ["FRAGCACHE_CDN_PREFIX"])
