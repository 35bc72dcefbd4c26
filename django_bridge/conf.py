"""The ``FRAGCACHE`` settings, read at call time through one object."""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings

#: Every key ``FRAGCACHE`` accepts, with its default.
DEFAULTS: dict[str, Any] = {
    # The cache alias; None: "template_fragments" if defined, else "default",
    # as Django's own {% cache %} tag does.
    "CACHE": None,
    "KEY_PREFIX": "fragcache",
    "STALE_GRACE": 60.0,
    "LOCK_TIMEOUT": 30.0,
    "LOCK_WAIT": 2.0,
    "FAIL_OPEN": True,
    # A dotted path or callable: request -> tenant id or None (decorators).
    "TENANT_RESOLVER": None,
    # The response header that says HIT or MISS on cached views; None: none.
    "VIEW_DEBUG_HEADER": "X-Cache",
    # Query parameters that never split a cached view (fnmatch patterns).
    "IGNORED_QUERY_PARAMS": ("utm_*", "fbclid", "gclid"),
    # {"app_label.model": "field"}: a model's vary identity adds that field
    # (an updated_at, say), so saving the row makes a new key.
    "VERSION_FIELDS": {},
    # invalidate_on_save invalidates once more this many seconds later, which
    # clears what a request that read before the save stored; None: off.
    "INVALIDATE_AGAIN_AFTER": 5.0,
}


class Settings:
    """``conf.settings.KEY_PREFIX`` and friends, from ``settings.FRAGCACHE``."""

    @property
    def user_settings(self) -> dict[str, Any]:
        return dict(getattr(django_settings, "FRAGCACHE", None) or {})

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(name)
        return self.user_settings.get(name, DEFAULTS[name])

    @property
    def cache_alias(self) -> str:
        alias = self.CACHE
        if alias:
            return str(alias)
        return (
            "template_fragments"
            if "template_fragments" in django_settings.CACHES
            else "default"
        )


settings = Settings()
