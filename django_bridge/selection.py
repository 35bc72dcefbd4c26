"""Which backend the fragment cache runs on under Django.

Three ways, in this order:

1. ``FRAGCACHE["BACKEND"]``: a core backend named by import path, built with
   ``FRAGCACHE["OPTIONS"]`` as keyword arguments, as Django's ``CACHES`` does.
2. The cache alias is django-redis (its plain ``DefaultClient``) or Django's
   own ``RedisCache``: a core :class:`~jinja_fragcache.RedisBackend` on that
   cache's own connection pool, so Django gets the Lua scripts, the near
   cache and entries that are never pickled.  ``FRAGCACHE["NATIVE_REDIS"] =
   False`` turns it off.
3. Any other cache: :class:`~.backend.DjangoCacheBackend`, the adapter.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from collections.abc import Mapping
from typing import Any

from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured

from jinja_fragcache.backends.base import Backend
from jinja_fragcache.backends.redis import RedisBackend
from jinja_fragcache.keys import check_prefix

from .backend import DjangoCacheBackend
from .conf import settings

logger = logging.getLogger("django_bridge")

DJANGO_REDIS = "django_redis.cache.RedisCache"
DJANGOS_REDIS = "django.core.cache.backends.redis.RedisCache"

#: The serializer and compressor that django-redis uses unless told
#: otherwise.  Another one may be a policy (encryption, compression), which
#: the native path would skip: such a cache keeps the adapter.
_DJANGO_REDIS_PLAIN = {
    "SERIALIZER": "django_redis.serializers.pickle.PickleSerializer",
    "COMPRESSOR": "django_redis.compressors.identity.IdentityCompressor",
}


def choose_backend(prefix: str) -> tuple[Any, str]:
    """The backend of the current settings, and the key prefix to use on it.

    The prefix is *prefix* (``FRAGCACHE["KEY_PREFIX"]``) except on the
    native Redis path, where the alias's ``KEY_PREFIX`` and ``VERSION`` are
    folded in (:func:`native_prefix`).

    :raises ImproperlyConfigured: ``FRAGCACHE["BACKEND"]`` cannot be built.
    """
    if settings.BACKEND is not None or settings.OPTIONS:
        return build_configured_backend(), prefix
    alias = settings.cache_alias
    if settings.NATIVE_REDIS:
        cache = caches[alias]
        native = native_redis_backend(alias, cache)
        if native is not None:
            return native, native_prefix(prefix, cache)
    return DjangoCacheBackend(alias), prefix


# -- FRAGCACHE["BACKEND"] ----------------------------------------------------


def build_configured_backend() -> Any:
    """``FRAGCACHE["BACKEND"](**FRAGCACHE["OPTIONS"])``, checked.

    :raises ImproperlyConfigured: the path does not import, the options do
        not fit, or what it builds is not a fragment cache backend.
    """
    path, options = settings.BACKEND, settings.OPTIONS
    if options is None:
        options = {}
    if not isinstance(path, str) or not path:
        raise ImproperlyConfigured(
            'FRAGCACHE["OPTIONS"] is set but FRAGCACHE["BACKEND"] is not: name '
            'the backend by its import path, e.g. "jinja_fragcache.backends.'
            'redis.RedisBackend".'
            if path is None
            else 'FRAGCACHE["BACKEND"] must be an import path (a string), not '
            f"{path!r}."
        )
    if not isinstance(options, Mapping):
        raise ImproperlyConfigured(
            f'FRAGCACHE["OPTIONS"] must be a dict of keyword arguments for '
            f"{path}, not {type(options).__name__}."
        )
    factory = _import(path)
    # Only the option names in messages: a URL or a password is a secret.
    given = ", ".join(sorted(map(str, options))) or "none"
    try:
        backend = factory(**options)
    except Exception as error:
        raise ImproperlyConfigured(
            f'FRAGCACHE["BACKEND"] {path} could not be built from '
            f'FRAGCACHE["OPTIONS"] (options given: {given}): '
            f"{type(error).__name__}: {error}"
        ) from error
    if not isinstance(backend, Backend):
        raise ImproperlyConfigured(
            f'FRAGCACHE["BACKEND"] {path} built {type(backend).__name__}, which '
            "is not a fragment cache backend (jinja_fragcache.backends.base."
            'Backend). For a Django cache, name its alias in FRAGCACHE["CACHE"].'
        )
    try:
        _try_a_connection(backend)
    except Exception as error:
        close_backend(backend)
        raise ImproperlyConfigured(
            f'FRAGCACHE["BACKEND"] {path}: its connections cannot be made from '
            f'FRAGCACHE["OPTIONS"] (options given: {given}): '
            f"{type(error).__name__}: {error}"
        ) from error
    return backend


def _import(path: str) -> Any:
    """*path*'s object: ``module.Class`` or ``module.Class.factory``."""
    parts = path.split(".")
    missing: ModuleNotFoundError | None = None
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            found: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is not None and not module_name.startswith(error.name):
                raise _unimportable(path, error) from error  # a missing dependency
            missing = missing or error
            continue
        except ImportError as error:
            raise _unimportable(path, error) from error
        try:
            for attribute in parts[split:]:
                found = getattr(found, attribute)
        except AttributeError as error:
            # In a package, a name it lacks is more likely a misspelt module.
            reason: Exception = error
            if missing is not None and hasattr(found, "__path__"):
                reason = missing
            raise _unimportable(path, reason) from error
        if not callable(found):
            raise ImproperlyConfigured(
                f'FRAGCACHE["BACKEND"] {path} is not a class or a function.'
            )
        return found
    raise _unimportable(path, missing or ValueError("not a dotted path"))


def _unimportable(path: str, error: Exception) -> ImproperlyConfigured:
    return ImproperlyConfigured(
        f'FRAGCACHE["BACKEND"] {path} cannot be imported: {error}'
    )


def _try_a_connection(backend: Any) -> None:
    """Make (never open) one connection of a redis-py backend: a misspelt
    option otherwise fails at the first render, not here."""
    pool = getattr(getattr(backend, "client", None), "connection_pool", None)
    make = getattr(pool, "make_connection", None)
    if callable(make):
        make().disconnect()


def close_backend(backend: Any) -> None:
    """Close a backend this module built (never a Django cache's adapter:
    Django closes its caches itself)."""
    if isinstance(backend, DjangoCacheBackend):
        return
    close = getattr(backend, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # closing a backend that never connected
            logger.debug("closing %r failed", backend, exc_info=True)


# -- the native Redis path -----------------------------------------------------


class DjangoRedisBackend(RedisBackend):
    """A :class:`~jinja_fragcache.RedisBackend` on the connection pool of
    Django cache *alias* (django-redis or Django's ``RedisCache``).

    The pool's connection settings (timeouts, password, TLS) are the
    cache's; nothing goes through the cache's serializer.
    """

    def __init__(self, client: Any, *, alias: str) -> None:
        super().__init__(client)
        self.alias = alias

    def __repr__(self) -> str:
        return f"<DjangoRedisBackend {self.alias!r} {self.client!r}>"


def native_redis_backend(alias: str, cache: Any) -> DjangoRedisBackend | None:
    """A core backend on *cache*'s own pool, or ``None`` (logged at debug
    level, with the reason) where the cache must keep the adapter."""
    client, reason = _plain_redis_client(cache)
    if client is None:
        logger.debug(
            "FRAGCACHE: the cache %r keeps the Django cache adapter: %s", alias, reason
        )
        return None
    return DjangoRedisBackend(client, alias=alias)


def _plain_redis_client(cache: Any) -> tuple[Any, str]:
    """The ``redis.Redis`` that writes for *cache*, or ``None`` and why not."""
    kind = _path(type(cache))
    if kind == DJANGO_REDIS:
        client_class = _path(type(cache.client))
        if client_class != "django_redis.client.default.DefaultClient":
            return None, (
                f"its CLIENT_CLASS is {client_class} (sharded, herd and sentinel "
                "clients place or read keys their own way); only DefaultClient "
                "takes the native path"
            )
        options = cache.client._options
        for option, plain in _DJANGO_REDIS_PLAIN.items():
            if options.get(option, plain) != plain:
                return None, (
                    f"its {option} is {options[option]}, which the native path "
                    "would bypass"
                )
        redis_client = cache.client.get_client(write=True)
    elif kind == DJANGOS_REDIS:
        from django.core.cache.backends.redis import RedisCacheClient, RedisSerializer

        inner: Any = cache._cache
        if type(inner) is not RedisCacheClient:
            return None, f"its client is {_path(type(inner))}"
        serializer = type(getattr(inner, "_serializer", None))
        if serializer is not RedisSerializer:
            return None, (
                f"its serializer is {_path(serializer)}, which the native path "
                "would bypass"
            )
        redis_client = inner.get_client(write=True)
    else:
        return None, f"it is {kind}, not Redis"
    return _plain(redis_client)


def _plain(client: Any) -> tuple[Any, str]:
    import redis
    import redis.connection

    if type(client) is not redis.Redis:
        return None, f"its client is {_path(type(client))}, not redis.Redis"
    connection_class = client.connection_pool.connection_class
    if connection_class not in (
        redis.connection.Connection,
        redis.connection.UnixDomainSocketConnection,
        redis.connection.SSLConnection,
    ):
        return None, f"its connections are {_path(connection_class)}"
    return client, ""


def _path(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def native_prefix(prefix: str, cache: Any) -> str:
    """*prefix* with the Django cache's ``KEY_PREFIX`` and ``VERSION`` folded
    in, so that two sites told apart by ``KEY_PREFIX`` on one Redis stay
    apart, and a new ``VERSION`` starts afresh, as through the adapter.

    ``KEY_PREFIX="shop"``, ``VERSION=2``: ``shop.v2.fragcache``.  With
    Django's defaults (``""`` and ``1``), *prefix* itself.  A part that a
    fragment cache prefix cannot hold, or a result over 64 characters,
    becomes a digest (``k`` and 16 hex digits).  ``KEY_FUNCTION`` is not
    used: it makes whole keys, and the fragment cache makes its own.
    """
    parts = []
    if cache.key_prefix:
        parts.append(str(cache.key_prefix))
    if cache.version != 1:
        parts.append(f"v{cache.version}")
    if not parts:
        return prefix
    folded = ".".join([*parts, prefix])
    if _fits(folded):
        return folded
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    folded = f"k{digest[:16]}.{prefix}"
    if _fits(folded):
        return folded
    return "k" + hashlib.sha256(f"{digest}\0{prefix}".encode()).hexdigest()[:32]


def _fits(prefix: str) -> bool:
    try:
        check_prefix(prefix)
    except ValueError:
        return False
    return True
