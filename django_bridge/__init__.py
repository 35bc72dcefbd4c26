"""The Django bridge of jinja-fragcache: DTL tags, Jinja2 under Django, and
invalidation from views, on the core's one key scheme.

    INSTALLED_APPS += ["django_bridge"]
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "get_cache_stats",
    "get_fragment_cache",
    "invalidate_fragment",
    "invalidate_fragments",
    "invalidate_on_save",
    "invalidate_tags",
]


def __getattr__(name: str) -> Any:
    # Imported lazily: the app module must import before Django's app
    # registry is ready, and the API touches models' signals.
    if name == "get_fragment_cache":
        from .cache import get_fragment_cache

        return get_fragment_cache
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
