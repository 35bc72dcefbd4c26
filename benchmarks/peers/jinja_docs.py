"""The Jinja docs' example extension over cachelib (SimpleCache, RedisCache)."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment

from .base import FRAGMENT, MAX_ENTRIES, TIMEOUT, Adapter, loop_around
from .jinja_docs_example import DocsFragmentCacheExtension


class JinjaDocsExample(Adapter):
    name = "jinja-docs"

    def setup(self) -> None:
        import redis
        from cachelib import RedisCache, SimpleCache

        self.store: Any
        if self.kind == "memory":
            self.store = SimpleCache(threshold=MAX_ENTRIES)
        else:
            self.client = redis.Redis.from_url(self.redis_url)
            self.store = RedisCache(host=self.client)
        env = Environment(extensions=[DocsFragmentCacheExtension])
        env.fragment_cache = self.store  # type: ignore[attr-defined]
        env.fragment_cache_prefix = "docs:"  # type: ignore[attr-defined]
        # No vary values: the name carries the value, as the docs' users do.
        self.compile(
            env.from_string,
            f'{{% cache "frag" ~ uid, {TIMEOUT} %}}' + FRAGMENT + "{% endcache %}",
            loop_around(f'{{% cache "card" ~ item.id, {TIMEOUT} %}}', "{% endcache %}"),
        )

    def teardown(self) -> None:
        if self.kind == "redis":
            self.client.close()
