"""The :class:`FragmentCache` of the current settings, shared by both engines."""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from jinja_fragcache import FragmentCache

from .conf import DEFAULTS, settings
from .identity import django_identity
from .purge import AfterInvalidation
from .safety import CsrfHoles, refuse_leftover_tokens
from .selection import choose_backend, close_backend

_caches: dict[tuple[Any, ...], FragmentCache] = {}
_lock = threading.Lock()


def get_fragment_cache() -> FragmentCache:
    """The cache that Jinja2 and DTL templates, the decorators and the
    ``invalidate_*`` helpers all use, built from ``FRAGCACHE`` at call time.

    One instance per distinct configuration, so statistics accumulate.
    """
    # Read on every render, so FRAGCACHE once: each settings.X copies it.
    given: dict[str, Any] = getattr(django_settings, "FRAGCACHE", None) or {}

    def get(name: str) -> Any:
        return given.get(name, DEFAULTS[name])

    config = (
        settings.alias_for(get("CACHE")),
        get("BACKEND"),
        repr(get("OPTIONS")),
        bool(get("NATIVE_REDIS")),
        get("KEY_PREFIX"),
        get("STALE_GRACE"),
        get("LOCK_TIMEOUT"),
        get("LOCK_WAIT"),
        get("FAIL_OPEN"),
        bool(django_settings.DEBUG),
    )
    cache = _caches.get(config)
    if cache is None:
        with _lock:
            cache = _caches.get(config)
            if cache is None:
                prefix, grace, lock_timeout, lock_wait, fail_open, debug = config[4:]
                backend, prefix = choose_backend(prefix)
                # Purges the edge after each stored bump; it reads
                # FRAGCACHE["PURGE"] when called.
                purger = AfterInvalidation()
                cache = _caches[config] = FragmentCache(
                    backend,
                    prefix=prefix,
                    stale_grace=grace,
                    lock_timeout=lock_timeout,
                    lock_wait=lock_wait,
                    fail_open=fail_open,
                    store_filter=refuse_leftover_tokens,
                    hole_filler=CsrfHoles(),
                    identity=django_identity(),
                    debug=debug,
                    on_invalidated=purger,
                )
                purger.statistics = cache.statistics
    return cache


@receiver(setting_changed)
def _forget(setting: str, **kwargs: Any) -> None:
    # Tests override CACHES and FRAGCACHE; a stale instance would keep
    # pointing at the old alias.
    if setting in ("FRAGCACHE", "CACHES", "DEBUG"):
        with _lock:
            forgotten = list(_caches.values())
            _caches.clear()
        for cache in forgotten:
            close_backend(cache.backend)
