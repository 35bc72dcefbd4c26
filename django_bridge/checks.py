"""System checks: a wrong alias, a typo in FRAGCACHE, a per-process cache, a
backend that cannot be built."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings as django_settings
from django.core.checks import Error, Warning, register
from django.core.exceptions import ImproperlyConfigured

from .conf import DEFAULTS, settings
from .selection import build_configured_backend, close_backend

PER_PROCESS = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    problems: list[Any] = []
    unknown = sorted(set(settings.user_settings) - set(DEFAULTS))
    if unknown:
        problems.append(
            Error(
                f"FRAGCACHE has unknown keys: {', '.join(unknown)}.",
                hint=f"The keys are: {', '.join(DEFAULTS)}.",
                id="fragcache.E001",
            )
        )
    configured = settings.BACKEND is not None or bool(settings.OPTIONS)
    if configured:
        problems += _backend_problems()
    alias = settings.cache_alias
    caches = django_settings.CACHES
    if alias not in caches:
        problems.append(
            Error(
                f"FRAGCACHE['CACHE'] names the cache alias {alias!r}, which "
                "CACHES does not define.",
                hint=f"Use one of: {', '.join(caches)}.",
                id="fragcache.E002",
            )
        )
    elif configured:
        pass  # the fragments are not on the alias: its warnings are not ours
    elif caches[alias].get("BACKEND") in PER_PROCESS and not django_settings.DEBUG:
        problems.append(
            Warning(
                f"The fragment cache uses {caches[alias]['BACKEND']} (alias "
                f"{alias!r}): each process has its own copy, so invalidation in "
                "one process does not reach the others.",
                hint="Use a shared cache such as django-redis in production.",
                id="fragcache.W001",
            )
        )
    elif _lacks_socket_timeout(caches[alias]):
        problems.append(
            Warning(
                f"The fragment cache's Django cache {alias!r} "
                f"({caches[alias]['BACKEND']}) has no socket timeout: a frozen "
                "server blocks every render for as long as it is frozen, and "
                "the fragment cache cannot fail open.",
                hint=_TIMEOUT_HINTS[caches[alias]["BACKEND"]],
                id="fragcache.W002",
            )
        )
    return problems + _cdn_problems()


def _backend_problems() -> list[Any]:
    """``FRAGCACHE["BACKEND"]`` and ``OPTIONS``: a backend that can be built
    (it is built, then closed: nothing connects)."""
    try:
        backend = build_configured_backend()
    except ImproperlyConfigured as error:
        return [
            Error(
                str(error),
                hint='FRAGCACHE["BACKEND"] is the import path of a core backend '
                '(e.g. "jinja_fragcache.backends.redis.RedisBackend") and '
                'FRAGCACHE["OPTIONS"] the keyword arguments it takes (e.g. '
                '{"url": "redis://127.0.0.1:6379/0"}).',
                id="fragcache.E004",
            )
        ]
    close_backend(backend)
    return []


def _cdn_problems() -> list[Any]:
    """``SURROGATE_KEYS`` and ``PURGE``: meaningful, and used together."""
    problems: list[Any] = []
    style = _read(problems, lambda: settings.surrogate_style)
    purge = _read(problems, lambda: settings.purge)
    if problems or purge is None:
        return problems
    if style is None:
        problems.append(
            Warning(
                'FRAGCACHE["PURGE"] is set but FRAGCACHE["SURROGATE_KEYS"] is '
                "not: no response lists its keys, so a purge finds nothing.",
                hint='Set FRAGCACHE["SURROGATE_KEYS"] = {"HEADER": "xkey"} and add '
                "django_bridge.middleware.SurrogateKeyMiddleware to MIDDLEWARE.",
                id="fragcache.W003",
            )
        )
    elif style.header != "xkey":
        problems.append(
            Warning(
                'FRAGCACHE["PURGE"] purges Varnish by its xkey header, but '
                f"responses list their keys in {style.header}.",
                hint='Use FRAGCACHE["SURROGATE_KEYS"] = {"HEADER": "xkey"} with '
                "Varnish.",
                id="fragcache.W004",
            )
        )
    return problems


_T = TypeVar("_T")


def _read(problems: list[Any], read: Callable[[], _T]) -> _T | None:
    """*read()*, or ``None`` with an E003 in *problems*."""
    try:
        return read()
    except ImproperlyConfigured as error:
        problems.append(Error(str(error), id="fragcache.E003"))
        return None


#: The network caches, and the OPTIONS that set a read timeout on each.
_TIMEOUT_HINTS = {
    "django_redis.cache.RedisCache": (
        'Set OPTIONS {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5}.'
    ),
    "django.core.cache.backends.redis.RedisCache": (
        'Set OPTIONS {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}.'
    ),
    "django.core.cache.backends.memcached.PyMemcacheCache": (
        'Set OPTIONS {"connect_timeout": 0.5, "timeout": 0.5}.'
    ),
}
_TIMEOUT_OPTIONS = ("SOCKET_TIMEOUT", "socket_timeout", "timeout")


def _lacks_socket_timeout(config: dict[str, Any]) -> bool:
    if config.get("BACKEND") not in _TIMEOUT_HINTS:
        return False
    options = config.get("OPTIONS") or {}
    pool = options.get("CONNECTION_POOL_KWARGS") or {}
    return not any(options.get(name) or pool.get(name) for name in _TIMEOUT_OPTIONS)
