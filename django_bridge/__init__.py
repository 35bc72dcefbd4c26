"""The Django bridge of jinja-fragcache: DTL tags, Jinja2 under Django, and
invalidation from views, on the core's one key scheme.

    INSTALLED_APPS += ["django_bridge"]

Every public helper is importable from here::

    from django_bridge import cache_view, invalidate_fragment, warm_url

The names are imported on first use (PEP 562), so importing the package
touches neither Django's settings nor its app registry; the submodules
(``django_bridge.views``, ``.conditional``, ``.warming``…) keep working.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import (
        get_cache_stats,
        invalidate_fragment,
        invalidate_fragments,
        invalidate_on_save,
        invalidate_tags,
    )
    from .cache import get_fragment_cache
    from .conditional import condition_support, etag_support, last_modified_support
    from .metrics import metrics_view
    from .views import (
        cache_api_list,
        cache_api_response,
        cache_view,
        cache_view_per_tenant,
        cache_view_per_user,
        invalidate_view_cache,
    )
    from .warming import warm_cache, warm_cache_batch, warm_url, warmer

#: Where each public name lives: ``name -> submodule``.
_HOMES: dict[str, str] = {
    "cache_api_list": "views",
    "cache_api_response": "views",
    "cache_view": "views",
    "cache_view_per_tenant": "views",
    "cache_view_per_user": "views",
    "condition_support": "conditional",
    "etag_support": "conditional",
    "get_cache_stats": "api",
    "get_fragment_cache": "cache",
    "invalidate_fragment": "api",
    "invalidate_fragments": "api",
    "invalidate_on_save": "api",
    "invalidate_tags": "api",
    "invalidate_view_cache": "views",
    "last_modified_support": "conditional",
    "metrics_view": "metrics",
    "warm_cache": "warming",
    "warm_cache_batch": "warming",
    "warm_url": "warming",
    "warmer": "warming",
}

__all__ = [
    "cache_api_list",
    "cache_api_response",
    "cache_view",
    "cache_view_per_tenant",
    "cache_view_per_user",
    "condition_support",
    "etag_support",
    "get_cache_stats",
    "get_fragment_cache",
    "invalidate_fragment",
    "invalidate_fragments",
    "invalidate_on_save",
    "invalidate_tags",
    "invalidate_view_cache",
    "last_modified_support",
    "metrics_view",
    "warm_cache",
    "warm_cache_batch",
    "warm_url",
    "warmer",
]


def __getattr__(name: str) -> Any:
    # Imported lazily: this module is imported before Django's app registry
    # is ready (it is the app), and the submodules import models' signals,
    # settings and the cache.
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{home}", __name__), name)
    globals()[name] = value  # the next lookup is a plain global
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
