"""Invalidating every variant of a fragment, on Redis, with N variants stored.

Ours is one version bump (``invalidate_all``); django-redis's is
``delete_pattern``, a SCAN of the whole database then a DEL of each match.
Each side has a database of its own holding exactly its N keys, flushed
before every size (the server is this run's own).
"""

from __future__ import annotations

import time
from typing import Any

from .django_settings import VERSION_BUMP_DB
from .redis_server import db_url
from .timing import compare

NAME = "sidebar"
PIPELINE_CHUNK = 5_000


def _populate(client: Any, keys: list[str]) -> None:
    pipe = client.pipeline(transaction=False)
    for start in range(0, len(keys), PIPELINE_CHUNK):
        for key in keys[start : start + PIPELINE_CHUNK]:
            pipe.set(key, b"x", ex=3600)
        pipe.execute()


def measure(
    redis_url: str, sizes: list[int], *, batch_seconds: float, rounds: int
) -> dict[int, dict[str, float]]:
    """``{size: {"jinja-fragcache": µs, "django-redis": µs}}``."""
    from django.core.cache import caches
    from django.core.cache.utils import make_template_fragment_key

    from jinja_fragcache import FragmentCache, RedisBackend, make_fragment_key

    theirs = caches["delete_pattern"]
    their_client = theirs.client.get_client(write=True)
    backend = RedisBackend.from_url(db_url(redis_url, VERSION_BUMP_DB))
    ours = FragmentCache(backend, prefix="inv")
    results: dict[int, dict[str, float]] = {}
    try:
        for size in sizes:
            our_keys = [make_fragment_key(NAME, [i], prefix="inv") for i in range(size)]
            their_keys = [
                theirs.make_key(make_template_fragment_key(NAME, [i]))
                for i in range(size)
            ]
            backend.client.flushdb()
            their_client.flushdb()
            _populate(backend.client, our_keys)
            ours_us = compare(
                {"ours": lambda: ours.invalidate_all(NAME)},
                batch_seconds=batch_seconds,
                rounds=rounds,
            )["ours"]
            # Destructive, so timed once per population; a few times when
            # that is cheap, and the median kept.
            samples = []
            for _ in range(3 if size <= 10_000 else 1):
                _populate(their_client, their_keys)
                start = time.perf_counter_ns()
                deleted = theirs.delete_pattern(f"*{NAME}*")
                samples.append((time.perf_counter_ns() - start) / 1000)
                assert deleted == size, (deleted, size)
            results[size] = {
                "jinja-fragcache": ours_us,
                "django-redis": sorted(samples)[len(samples) // 2],
            }
    finally:
        backend.client.flushdb()
        backend.close()
    return results
