"""jinja-fragcache: ``cache_fragment`` and ``cache_each``."""

from __future__ import annotations

import os
from typing import Any

from jinja2 import Environment

from .base import BODY, CARD, FRAGMENT, HIT_UID, MAX_ENTRIES, SHELL, TIMEOUT, Adapter

#: The hole of the "hit with a hole" case: what a sidebar greets a user with.
HOLE = "Hello, {{ user }}!"


#: ``FRAGCACHE_BENCH_NEAR_CACHE=0`` measures RedisBackend with its near cache
#: off: every hit is then one MGET, as before the near cache.
NEAR_CACHE = os.environ.get("FRAGCACHE_BENCH_NEAR_CACHE", "1") != "0"


class Ours(Adapter):
    name = "jinja-fragcache"
    #: The key prefix; an adapter that shares a server with this one and draws
    #: the same fresh ids (another process) needs one of its own.
    prefix = "bench"

    def make_backend(self) -> Any:
        from jinja_fragcache import MemoryBackend, RedisBackend

        if self.kind == "memory":
            return MemoryBackend(max_entries=MAX_ENTRIES)
        return RedisBackend.from_url(self.redis_url, near_cache=NEAR_CACHE)

    def setup(self) -> None:
        from jinja_fragcache import FragmentCache, FragmentCacheExtension

        self.backend: Any = self.make_backend()
        env = Environment(extensions=[FragmentCacheExtension])
        self.cache = FragmentCache(self.backend, prefix=self.prefix)
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

        # One small hole in the same fragment, and that hole's content alone.
        self.holed = env.from_string(
            SHELL.format(
                f"{{% cache_fragment {TIMEOUT} holed uid %}}"
                + FRAGMENT
                + HOLE.join(("{% nocache %}", "{% endnocache %}"))
                + "{% endcache_fragment %}"
            )
        )
        self.hole = env.from_string(HOLE)

    def render_hole_hit(self) -> str:
        return self.holed.render({"uid": HIT_UID, "body": BODY, "user": "alice"})

    def render_hole_alone(self) -> str:
        return self.hole.render({"user": "alice"})

    def teardown(self) -> None:
        if self.kind != "memory":
            self.backend.close()
