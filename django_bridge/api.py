"""Invalidation and statistics for views, signals and commands."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save

from .cache import get_fragment_cache
from .conf import settings
from .stats import site_stats


def invalidate_fragment(
    name: str, *vary: object, again_after: float | None = None
) -> bool:
    """Clear one variant of fragment *name*, whichever engine rendered it.

    Vary values compare by ``str()``: ``invalidate_fragment("card", "5")``
    from a URL kwarg clears what a template stored under ``5``.  Fails open:
    returns ``False`` (and logs) when the cache is down.
    """
    return get_fragment_cache().invalidate(name, *vary, again_after=again_after)


def invalidate_fragments(name: str, *, again_after: float | None = None) -> bool:
    """Clear every variant of fragment *name*: one version bump, no scan."""
    return get_fragment_cache().invalidate_all(name, again_after=again_after)


def invalidate_tags(*tags: str, again_after: float | None = None) -> bool:
    """Clear every fragment tagged with any of *tags*.

    With *again_after*, once more that many seconds later (see
    :func:`invalidate_on_save`).  A failed invalidation is queued and
    replayed once the cache answers; see :mod:`jinja_fragcache.invalidation`.
    """
    return get_fragment_cache().invalidate_tags(*tags, again_after=again_after)


def get_cache_stats() -> dict[str, Any]:
    """Hit rate and server figures, and the core's per-fragment counters.

    ``keys``, ``memory_used`` and ``memory_peak`` come from Redis ``INFO``
    and ``DBSIZE`` where the cache is Redis, and are ``None`` elsewhere.
    ``hits``/``misses``/``hit_rate`` and ``fragments`` add up the lookups of
    every process that published its counters (see :mod:`django_bridge.stats`).
    """
    cache = get_fragment_cache()
    try:
        fragments = site_stats()
    except Exception:  # the server is down: this process's figures only
        fragments = cache.stats()
    hits = sum(int(f["hits"]) + int(f["stale"]) for f in fragments.values())
    misses = sum(int(f["misses"]) for f in fragments.values())
    info = getattr(cache.backend, "info", None)
    try:
        server = info() if info else {}
    except Exception:  # stats must not break on a down server
        server = {}
    return {
        "hits": hits,
        "misses": misses,
        "hit_rate": hits / (hits + misses) * 100 if hits + misses else 0.0,
        "keys": server.get("keys"),
        "memory_used": server.get("memory_used"),
        "memory_peak": server.get("memory_peak"),
        "fragments": fragments,
    }


def invalidate_on_save(
    model: type[Any], *, tags: Callable[[Any], Iterable[str]]
) -> None:
    """Invalidate ``tags(instance)`` whenever an instance is saved or deleted.

    The invalidation runs after the transaction commits, so a page rendered
    meanwhile cannot cache the old data under the new version::

        invalidate_on_save(Product, tags=lambda p: ["products", f"product-{p.pk}"])

    It runs once more ``FRAGCACHE["INVALIDATE_AGAIN_AFTER"]`` seconds later
    (5 by default; ``None`` turns it off).  That closes the
    read-before-invalidate race: a request that loaded its data before the
    save, and renders after the invalidation, stores the old data under the
    new versions; the second invalidation clears it.  It covers requests
    that take less than that delay between reading and rendering.
    """

    def handler(sender: Any, instance: Any, **kwargs: Any) -> None:
        names = list(tags(instance))
        again = settings.INVALIDATE_AGAIN_AFTER
        transaction.on_commit(lambda: invalidate_tags(*names, again_after=again))

    # weak=False: the handler is a closure nobody else holds.
    uid = f"fragcache-invalidate-{model._meta.label}"
    post_save.connect(handler, sender=model, weak=False, dispatch_uid=uid + "-save")
    post_delete.connect(handler, sender=model, weak=False, dispatch_uid=uid + "-delete")
