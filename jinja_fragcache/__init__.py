"""Template fragment caching for Jinja2.

>>> from jinja2 import Environment
>>> from jinja_fragcache import FragmentCacheExtension
>>> env = Environment(extensions=[FragmentCacheExtension])
>>> env.from_string(
...     "{% cache_fragment 300 greeting name %}Hello {{ name }}{% endcache_fragment %}"
... ).render(name="World")
'Hello World'
"""

from __future__ import annotations

from .api import get_default_cache, invalidate_fragment, set_default_cache
from .backends.base import Backend
from .backends.memory import MemoryBackend
from .cache import FragmentCache, FragmentRequest
from .ext import FragmentCacheExtension
from .keys import FragmentCacheWarning, make_fragment_key

__all__ = [
    "Backend",
    "CachelibBackend",
    "FragmentCache",
    "FragmentCacheExtension",
    "FragmentCacheWarning",
    "FragmentRequest",
    "MemoryBackend",
    "RedisBackend",
    "RedisClusterBackend",
    "SentinelBackend",
    "get_default_cache",
    "invalidate_fragment",
    "make_fragment_key",
    "set_default_cache",
]


def __getattr__(name: str) -> object:
    # The optional backends import their client library lazily; importing
    # the package must work without redis or cachelib installed.
    if name == "RedisBackend":
        from .backends.redis import RedisBackend

        return RedisBackend
    if name == "RedisClusterBackend":
        from .backends.cluster import RedisClusterBackend

        return RedisClusterBackend
    if name == "SentinelBackend":
        from .backends.sentinel import SentinelBackend

        return SentinelBackend
    if name == "CachelibBackend":
        from .backends.cachelib import CachelibBackend

        return CachelibBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
