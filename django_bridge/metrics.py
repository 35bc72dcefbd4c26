"""Prometheus metrics of the whole site (``pip install
"jinja-fragcache[prometheus]"``).

A view of ours::

    from django_bridge import metrics_view

    urlpatterns += [path("metrics", metrics_view)]

or django-prometheus's ``/metrics`` (it serves the default ``REGISTRY``)::

    class ShopConfig(AppConfig):
        def ready(self) -> None:
            from django_bridge.metrics import register

            register()

Either way a scrape reports what every web process published to the cache
(:func:`django_bridge.stats.site_stats`), so one worker answers for all; see
docs/metrics.md.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache

from jinja_fragcache.metrics import FragmentCacheCollector

from .cache import get_fragment_cache
from .stats import site_stats

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

_lock = threading.Lock()
_own_registry: CollectorRegistry | None = None
_registered: weakref.WeakSet[CollectorRegistry] = weakref.WeakSet()


def site_fragment_stats() -> dict[str, dict[str, Any]]:
    """Every process's published counters added up; this process's own
    when the cache cannot be read, as :func:`get_cache_stats` does."""
    try:
        return site_stats()
    except Exception:  # the server is down: a scrape still answers
        return get_fragment_cache().stats()


def collector() -> FragmentCacheCollector:
    """A collector of the site-wide figures, read at every scrape."""
    return FragmentCacheCollector(site_fragment_stats)


def register(registry: CollectorRegistry | None = None) -> None:
    """Add the site-wide figures to *registry* (prometheus_client's default
    ``REGISTRY``, which django-prometheus serves, when ``None``); once per
    registry, so calling it from ``AppConfig.ready`` twice is harmless."""
    if registry is None:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    with _lock:
        if registry in _registered:
            return
        registry.register(collector())
        _registered.add(registry)


def _registry() -> CollectorRegistry:
    global _own_registry
    with _lock:
        if _own_registry is None:
            from prometheus_client import CollectorRegistry

            own = CollectorRegistry(auto_describe=True)
            own.register(collector())
            _own_registry = own
        return _own_registry


@never_cache
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The site's fragment cache metrics in Prometheus' text format.

    Not access-controlled: mount it where only the scraper reaches it (the
    labels are fragment names).
    """
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    registry = _registry()
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
