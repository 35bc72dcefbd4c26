"""jinja-fragcache: ``cache_fragment`` and ``cache_each``."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment

from .base import CARD, FRAGMENT, MAX_ENTRIES, TIMEOUT, Adapter


class Ours(Adapter):
    name = "jinja-fragcache"

    def setup(self) -> None:
        from jinja_fragcache import (
            FragmentCache,
            FragmentCacheExtension,
            MemoryBackend,
            RedisBackend,
        )

        self.backend: Any
        if self.kind == "memory":
            self.backend = MemoryBackend(max_entries=MAX_ENTRIES)
        else:
            self.backend = RedisBackend.from_url(self.redis_url)
        env = Environment(extensions=[FragmentCacheExtension])
        self.cache = FragmentCache(self.backend, prefix="bench")
        # Set, not extend(): extend() leaves the extension's default in place.
        env.fragment_cache = self.cache  # type: ignore[attr-defined]
        self.compile(
            env.from_string,
            f"{{% cache_fragment {TIMEOUT} frag uid %}}"
            + FRAGMENT
            + "{% endcache_fragment %}",
            f"{{% cache_each {TIMEOUT} card item in items item.id %}}"
            + CARD
            + "{% endcache_each %}",
        )

    def teardown(self) -> None:
        if self.kind == "redis":
            self.backend.close()
