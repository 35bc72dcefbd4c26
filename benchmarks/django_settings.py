"""Django, configured once per worker process with ``settings.configure``.

Django's ``{% cache %}`` can name a cache alias, but django-jinja's tag
always uses ``default``; so ``default`` is the backend kind under test, and
each kind runs in a process of its own.

``django_bridge`` is installed, with ``FRAGCACHE`` on that same ``default``
alias: on django-redis the bridge runs the core's ``RedisBackend`` on the
alias's pool (the native path), on LocMemCache its Django cache adapter.
Its DTL tags load with ``{% load cache_tags %}``; its Jinja2 environment is
the ``jinja2`` engine.  ``DEBUG`` is off, as in production: a debug render
checks more (and serves no remembered hit).
"""

from __future__ import annotations

from typing import Any

from .redis_server import db_url

#: The bridge's own key prefix: its entries never meet the core adapter's
#: (``bench``) in database 0.
BRIDGE_KEY_PREFIX = "benchdj"

#: Databases of the benchmark's own Redis: 0 holds the render cases of every
#: implementation (each has its own key prefix); the others are kept apart so
#: that each invalidation case sees exactly the keys it populated.
RENDER_DB = 0
BUILTIN_REDIS_DB = 1
DELETE_PATTERN_DB = 2
VERSION_BUMP_DB = 3


def caches(kind: str, redis_url: str) -> dict[str, dict[str, Any]]:
    if kind == "memory":
        return {
            "default": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "OPTIONS": {"MAX_ENTRIES": 100_000},
            }
        }

    def django_redis(db: int) -> dict[str, Any]:
        return {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": db_url(redis_url, db),
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
        }

    return {
        "default": django_redis(RENDER_DB),
        "builtin_redis": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": db_url(redis_url, BUILTIN_REDIS_DB),
        },
        "delete_pattern": django_redis(DELETE_PATTERN_DB),
    }


def configure(kind: str, redis_url: str) -> None:
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        CACHES=caches(kind, redis_url),
        TEMPLATES=[
            {"BACKEND": "django.template.backends.django.DjangoTemplates"},
            {
                "BACKEND": "django.template.backends.jinja2.Jinja2",
                "NAME": "jinja2",
                "OPTIONS": {"environment": "django_bridge.jinja2.environment"},
            },
        ],
        # The bridge's identity of a user needs auth's models (no database).
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django_bridge",
        ],
        FRAGCACHE={"CACHE": "default", "KEY_PREFIX": BRIDGE_KEY_PREFIX},
        USE_TZ=True,
    )
    django.setup()
