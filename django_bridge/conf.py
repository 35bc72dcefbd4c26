"""The ``FRAGCACHE`` settings, read at call time through one object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from jinja_fragcache.surrogates import HeaderStyle, style_for

#: Every key ``FRAGCACHE`` accepts, with its default.
DEFAULTS: dict[str, Any] = {
    # The cache alias; None: "template_fragments" if defined, else "default",
    # as Django's own {% cache %} tag does.
    "CACHE": None,
    # A core backend instead of a Django cache: its import path, and the
    # keyword arguments to build it with (as in Django's CACHES).
    "BACKEND": None,
    "OPTIONS": None,
    # On django-redis or Django's RedisCache, run a core RedisBackend on the
    # cache's own connection pool; False: the Django cache adapter.
    "NATIVE_REDIS": True,
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
    # {"HEADER": "xkey" | "Surrogate-Key" | "Cache-Tag"}: SurrogateKeyMiddleware
    # lists each response's surrogate keys in that header; None: off.
    "SURROGATE_KEYS": None,
    # {"BACKEND": "varnish", "URLS": [...]} (optional "TIMEOUT",
    # "RETRY_INTERVAL" in seconds): purge those caches after invalidations.
    "PURGE": None,
}

#: What ``FRAGCACHE["PURGE"]`` may hold, with the defaults of the optional keys.
PURGE_DEFAULTS: dict[str, Any] = {
    "BACKEND": None,
    "URLS": (),
    "TIMEOUT": 2.0,
    "RETRY_INTERVAL": 5.0,
}
PURGE_BACKENDS = ("varnish",)


@dataclass(frozen=True)
class PurgeSettings:
    """``FRAGCACHE["PURGE"]``, checked."""

    backend: str
    urls: tuple[str, ...]
    timeout: float
    retry_interval: float


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
        return self.alias_for(self.CACHE)

    @staticmethod
    def alias_for(alias: object) -> str:
        """The Django cache alias that ``FRAGCACHE["CACHE"]`` = *alias* means."""
        if alias:
            return str(alias)
        return (
            "template_fragments"
            if "template_fragments" in django_settings.CACHES
            else "default"
        )

    @property
    def surrogate_style(self) -> HeaderStyle | None:
        """The header ``SURROGATE_KEYS`` names; ``None`` when it is off.

        :raises ImproperlyConfigured: for a setting that means nothing.
        """
        config = self.SURROGATE_KEYS
        if config is None:
            return None
        if not isinstance(config, dict) or set(config) != {"HEADER"}:
            raise ImproperlyConfigured(
                'FRAGCACHE["SURROGATE_KEYS"] must be None or {"HEADER": ...}, '
                f"not {config!r}"
            )
        try:
            return style_for(config["HEADER"])
        except ValueError as error:
            raise ImproperlyConfigured(
                f'FRAGCACHE["SURROGATE_KEYS"]: {error}'
            ) from None

    @property
    def purge(self) -> PurgeSettings | None:
        """``PURGE``, checked; ``None`` when it is off.

        :raises ImproperlyConfigured: for a setting that means nothing.
        """
        config = self.PURGE
        if config is None:
            return None
        if not isinstance(config, dict) or not set(config) <= set(PURGE_DEFAULTS):
            raise ImproperlyConfigured(
                'FRAGCACHE["PURGE"] must be None or a dict of '
                f"{', '.join(PURGE_DEFAULTS)}, not {config!r}"
            )
        values = {**PURGE_DEFAULTS, **config}
        if values["BACKEND"] not in PURGE_BACKENDS:
            raise ImproperlyConfigured(
                f'FRAGCACHE["PURGE"]["BACKEND"] must be one of '
                f"{', '.join(PURGE_BACKENDS)}, not {values['BACKEND']!r}"
            )
        urls = values["URLS"]
        if isinstance(urls, str) or not urls or not all(map(_is_http_url, urls)):
            raise ImproperlyConfigured(
                'FRAGCACHE["PURGE"]["URLS"] must be a list of http:// URLs, '
                f"not {urls!r}"
            )
        timing = (values["TIMEOUT"], values["RETRY_INTERVAL"])
        if not all(_is_positive(value) for value in timing):
            raise ImproperlyConfigured(
                'FRAGCACHE["PURGE"] TIMEOUT and RETRY_INTERVAL must be '
                f"positive numbers of seconds, not {timing!r}"
            )
        return PurgeSettings(values["BACKEND"], tuple(urls), *map(float, timing))


def _is_http_url(url: object) -> bool:
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _is_positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


settings = Settings()
