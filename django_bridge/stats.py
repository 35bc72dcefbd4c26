"""Statistics across processes.

The core counts per process.  Each web process publishes its counters to
the cache (after a request, at most every few seconds) under a key of its
own, listed in a small registry; :func:`site_stats` adds them all up.  What
is stored is JSON, read back with ``json.loads``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from typing import Any

from django.core.signals import request_finished
from django.dispatch import receiver

from jinja_fragcache.keys import stats_key
from jinja_fragcache.stats import combine

from .cache import get_fragment_cache

logger = logging.getLogger("django_bridge")

#: Seconds between two publications of one process.
PUBLISH_EVERY = 5.0
#: Seconds a published snapshot outlives its process.
KEEP_FOR = 3600

PROCESS = f"{socket.gethostname()}-{os.getpid()}"
_last_published = 0.0


def _load(raw: bytes | None) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _registry(backend: Any, prefix: str) -> list[str]:
    """The keys processes published under; garbage there reads as none."""
    found = _load(backend.get_many([stats_key("processes", prefix=prefix)])[0])
    if not isinstance(found, list):
        return []
    return [key for key in found if isinstance(key, str)]


def publish(process: str = PROCESS, snapshot: dict[str, Any] | None = None) -> None:
    """Store *snapshot* (this process's counters by default) for *process*."""
    cache = get_fragment_cache()
    backend, prefix = cache.backend, cache.prefix
    data = cache.stats() if snapshot is None else snapshot
    registry = stats_key("processes", prefix=prefix)
    mine = stats_key(process, prefix=prefix)
    backend.set(mine, json.dumps(data).encode(), KEEP_FOR)
    known = _registry(backend, prefix)
    alive = [
        key for key, raw in zip(known, backend.get_many(known), strict=True) if raw
    ]
    if mine not in alive or len(alive) != len(known):
        # Read, then write: a registration lost to a race comes back at the
        # next publication.
        backend.set(registry, json.dumps(sorted({*alive, mine})).encode(), None)


def site_stats() -> dict[str, dict[str, float | int | bool]]:
    """Every process's published counters, with this process's live ones."""
    cache = get_fragment_cache()
    backend, prefix = cache.backend, cache.prefix
    mine = stats_key(PROCESS, prefix=prefix)
    known = [key for key in _registry(backend, prefix) if key != mine]
    others = [_load(raw) for raw in backend.get_many(known)] if known else []
    return combine([*(s for s in others if isinstance(s, dict)), cache.stats()])


@receiver(request_finished)
def _publish_now_and_then(**kwargs: Any) -> None:
    global _last_published
    now = time.monotonic()
    if now - _last_published < PUBLISH_EVERY:
        return
    _last_published = now
    try:
        publish()
    except Exception:  # statistics never break a response
        logger.exception("could not publish fragment cache statistics")
