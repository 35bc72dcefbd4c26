"""Measure every implementation on one backend kind; print JSON.

Run by ``benchmarks/run.py`` once per backend kind, in a process of its own:
Django's default cache, which its ``{% cache %}`` and django-jinja use, is
fixed when settings are configured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any


def configure_django(kind: str, redis_url: str | None) -> None:
    import django
    from django.conf import settings

    if kind == "memory":
        cache = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    else:
        cache = {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": redis_url,
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
        }
    settings.configure(
        CACHES={"default": cache},
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates"}],
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()


def timed(fn: Callable[[], object], number: int) -> float:
    """Mean microseconds per call over one batch of *number* calls."""
    start = time.perf_counter_ns()
    for _ in range(number):
        fn()
    return (time.perf_counter_ns() - start) / number / 1000


def compare(
    cases: dict[str, Callable[[], object]], number: int, rounds: int
) -> dict[str, float]:
    """Median of *rounds* batches each; the implementations take turns, so
    that a slow spell of the machine falls on all of them alike."""
    for fn in cases.values():
        timed(fn, max(1, number // 10))  # warm up
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            samples[name].append(timed(fn, number))
    return {name: statistics.median(values) for name, values in samples.items()}


def build(
    kind: str, redis_url: str | None
) -> tuple[list[Any], Any, Callable[[], object]]:
    """The adapters, our backend, and a raw one-key fetch from it."""
    from cachelib import RedisCache, SimpleCache

    from jinja_fragcache import MemoryBackend, RedisBackend

    from . import peers

    if kind == "memory":
        backend: Any = MemoryBackend()
        flask_config = {"CACHE_TYPE": "SimpleCache"}
        docs_cache: Any = SimpleCache(threshold=100_000)
    else:
        backend = RedisBackend.from_url(redis_url or "")
        flask_config = {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": redis_url}
        host, port = (redis_url or "").rsplit("/", 1)[0].split("//")[1].split(":")
        docs_cache = RedisCache(host=host, port=int(port), key_prefix="docs")
    flask_adapter, app_context = peers.flask_caching(flask_config)
    app_context.push()
    adapters = [
        peers.ours(backend),
        peers.django_dtl(),
        peers.django_jinja(),
        flask_adapter,
        peers.jinja_docs(docs_cache),
    ]
    backend.set("bench:raw", b"x" * 2048, None)
    return adapters, backend, lambda: backend.get_many(["bench:raw"])


def measure(kind: str, redis_url: str | None, quick: bool) -> dict[str, Any]:
    from jinja2 import Environment

    from . import peers

    adapters, backend, raw_fetch = build(kind, redis_url)
    number, rounds = (200, 5) if quick else (1000, 15)
    results: dict[str, Any] = {}
    items = [{"id": i, "name": f"item {i}", "text": "t" * 150} for i in range(50)]

    for adapter in adapters:  # every page rendered once, so the hits are hits
        adapter.page(1)
        adapter.cards(items)
        assert adapter.page(1) == adapters[0].page(1), adapter.name
        assert adapter.cards(items) == adapters[0].cards(items), adapter.name

    results["hit"] = compare(
        {a.name: lambda a=a: a.page(1) for a in adapters}, number, rounds
    )
    counters = dict.fromkeys((a.name for a in adapters), 1000)

    def miss(adapter: Any) -> Callable[[], object]:
        def render() -> object:
            counters[adapter.name] += 1  # a vary value never seen: a miss
            return adapter.page(counters[adapter.name])

        return render

    results["miss"] = compare({a.name: miss(a) for a in adapters}, number // 2, rounds)
    results["uncached"] = compare({a.name: a.inline for a in adapters}, number, rounds)
    results["50 siblings"] = compare(
        {a.name: lambda a=a: a.cards(items) for a in adapters},
        max(10, number // 20),
        rounds,
    )
    shell = Environment().from_string(peers.SHELL.format(""))
    results["parts"] = compare(
        {"page shell": shell.render, "raw fetch": raw_fetch}, number, rounds
    )
    if kind == "redis":
        results["invalidate all variants"] = invalidation(backend, quick)
    return results


def invalidation(backend: Any, quick: bool) -> dict[str, dict[str, float]]:
    """Our version bump against django-redis's delete_pattern (a SCAN)."""
    from django.core.cache import cache
    from django.core.cache.utils import make_template_fragment_key

    from jinja_fragcache import FragmentCache, make_fragment_key

    ours = FragmentCache(backend, prefix="inv")
    client = backend.client
    results: dict[str, dict[str, float]] = {}
    for size in (1_000, 10_000) if quick else (1_000, 10_000, 100_000):
        name = f"list{size}"
        pipe = client.pipeline(transaction=False)
        for i in range(size):
            pipe.set(make_fragment_key(name, [i], prefix="inv"), b"x", ex=600)
            pipe.set(
                cache.make_key(make_template_fragment_key(name, [i])), b"x", ex=600
            )
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()
        ours_us = compare({"ours": lambda n=name: ours.invalidate_all(n)}, 200, 5)[
            "ours"
        ]
        start = time.perf_counter_ns()
        deleted = cache.delete_pattern(f"*template.cache.{name}.*")
        theirs_us = (time.perf_counter_ns() - start) / 1000
        assert deleted == size, deleted
        results[f"{size} keys"] = {
            "jinja-fragcache": ours_us,
            "django-redis": theirs_us,
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["memory", "redis"], required=True)
    parser.add_argument("--redis-url")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    configure_django(args.backend, args.redis_url)
    print(json.dumps(measure(args.backend, args.redis_url, args.quick)))


if __name__ == "__main__":
    main()
