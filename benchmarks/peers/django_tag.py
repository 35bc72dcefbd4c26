"""Django's ``{% cache %}`` (``django.templatetags.cache``) in the DTL.

It goes through a Django cache alias: LocMemCache in memory, django-redis on
Redis (``default``), and Django's own ``RedisCache`` (``builtin_redis``).
"""

from __future__ import annotations

from .base import FRAGMENT, TIMEOUT, Adapter, loop_around


class DjangoTag(Adapter):
    name = "django"
    alias = "default"

    def setup(self) -> None:
        from django.template import engines

        using = "" if self.alias == "default" else f' using="{self.alias}"'
        self.compile(
            engines["django"].from_string,
            "{% load cache %}"
            + f"{{% cache {TIMEOUT} frag uid{using} %}}"
            + FRAGMENT
            + "{% endcache %}",
            "{% load cache %}"
            + loop_around(
                f"{{% cache {TIMEOUT} card item.id{using} %}}", "{% endcache %}"
            ),
        )

    def teardown(self) -> None:
        from django.core.cache import caches

        caches[self.alias].close()


class DjangoBuiltinRedisTag(DjangoTag):
    """The same tag on ``django.core.cache.backends.redis.RedisCache``."""

    name = "django builtin-redis"
    kinds = ("redis",)
    alias = "builtin_redis"
