"""Measure every implementation on one backend kind; print the results as JSON.

``benchmarks.run`` starts one of these per kind (``memory``, ``redis``):
Django's ``default`` cache, which django-jinja's tag always uses, is fixed
once settings are configured.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from typing import Any

from . import django_settings, invalidation, peers, under_django
from .peers.base import CARDS, MAX_ENTRIES, Adapter, cards_html, fresh_items
from .peers.ours import NEAR_CACHE
from .redis_server import db_url
from .timing import compare, sample
from .traffic import redis_commands


class Plan:
    """How long to measure: batches of about *batch_seconds*, *rounds* each."""

    def __init__(self, quick: bool) -> None:
        self.batch_seconds = 0.04 if quick else 0.2
        self.rounds = 5 if quick else 15
        self.invalidation_sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]

    def compare(
        self, cases: dict[str, Callable[[], object]], **options: Any
    ) -> dict[str, float]:
        return compare(
            cases, batch_seconds=self.batch_seconds, rounds=self.rounds, **options
        )


def raw_fetch(kind: str, redis_url: str) -> Callable[[], object]:
    """One backend fetch of one ~2 KB value, with no fragment logic around it:
    ``MemoryBackend.get_many`` in memory, a bare ``MGET`` on Redis."""
    value = b"x" * 2100
    if kind == "memory":
        from jinja_fragcache import MemoryBackend

        backend = MemoryBackend()
        backend.set("raw", value, None)
        return lambda: backend.get_many(["raw"])
    import redis

    client = redis.Redis.from_url(redis_url)
    client.set("bench:raw", value)
    return lambda: client.mget(["bench:raw"])


def hit_overhead(
    ours: Adapter, fetch: Callable[[], object], plan: Plan
) -> dict[str, float]:
    """What a one-fragment hit costs over the uncached page plus one fetch.

    The three are timed in adjacent batches and the overhead is the median of
    the per-round differences, so that the machine's drift cancels out.
    """
    samples = sample(
        {"hit": ours.render_hit, "shell": ours.render_uncached, "fetch": fetch},
        batch_seconds=plan.batch_seconds,
        rounds=plan.rounds,
    )
    rounds = zip(samples["hit"], samples["shell"], samples["fetch"], strict=True)
    result = {name: statistics.median(values) for name, values in samples.items()}
    result["overhead"] = statistics.median(h - s - f for h, s, f in rounds)
    return result


def hole_cost(ours: Any, plan: Plan) -> dict[str, float]:
    """What one small ``{% nocache %}`` hole adds to a hit, against what its
    content costs to render alone (the target: no more than that)."""
    ours.render_hole_hit()  # cached
    samples = sample(
        {
            "hit": ours.render_hit,
            "hit with hole": ours.render_hole_hit,
            "hole alone": ours.render_hole_alone,
        },
        batch_seconds=plan.batch_seconds,
        rounds=plan.rounds,
    )
    rounds = zip(*samples.values(), strict=True)
    result = {name: statistics.median(values) for name, values in samples.items()}
    result["overhead"] = statistics.median(h - p - a for p, h, a in rounds)
    return result


def check_same_html(adapters: list[Adapter]) -> None:
    """Render every page once (so that the hit cases are hits) and check that
    every implementation gives the same HTML as ours."""
    ours = adapters[0]
    for adapter in adapters:
        adapter.render_hit()
        adapter.render_siblings()
        for render in ("render_hit", "render_siblings", "render_uncached"):
            got, expected = getattr(adapter, render)(), getattr(ours, render)()
            assert got == expected, f"{adapter.name} {render}: {got[:200]!r}"
        items = fresh_items()
        got = adapter.render_cold_cards(items)
        assert got == cards_html(items), f"{adapter.name} cold cards: {got[:200]!r}"


def measure(kind: str, redis_url: str, plan: Plan) -> dict[str, Any]:
    render_url = db_url(redis_url, django_settings.RENDER_DB)
    adapters = peers.adapters(kind, render_url)
    for adapter in adapters:
        adapter.setup()
    try:
        check_same_html(adapters)
        results: dict[str, Any] = {
            "hit": plan.compare({a.name: a.render_hit for a in adapters}),
            # Every miss writes an entry (ours two: the entry and its variant's
            # version): the cap keeps every in-process cache under MAX_ENTRIES,
            # however fast the machine.
            "miss": plan.compare(
                {a.name: a.render_miss for a in adapters},
                max_number=MAX_ENTRIES // (4 * (plan.rounds + 1)),
            ),
            "uncached": plan.compare({a.name: a.render_uncached for a in adapters}),
            "50 siblings": plan.compare({a.name: a.render_siblings for a in adapters}),
            # Every card a miss: the same cap, 50 times over.
            "cold 50 cards": plan.compare(
                {a.name: a.render_cold_cards for a in adapters},
                max_number=MAX_ENTRIES // (8 * CARDS * (plan.rounds + 1)),
            ),
        }
        results["target"] = hit_overhead(adapters[0], raw_fetch(kind, render_url), plan)
        results["hole"] = hole_cost(adapters[0], plan)
        django_tag = next(a for a in adapters if a.name == "django")
        results["under django"] = under_django.measure(kind, django_tag, plan)
        if kind == "redis":
            results["commands"] = redis_commands(adapters, render_url)
            results["near cache"] = NEAR_CACHE
    finally:
        for adapter in adapters:
            adapter.teardown()
    if kind == "redis":
        results["invalidate all"] = invalidation.measure(
            redis_url,
            plan.invalidation_sizes,
            batch_seconds=plan.batch_seconds,
            rounds=plan.rounds,
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["memory", "redis"], required=True)
    parser.add_argument("--redis-url", required=True, help="redis://host:port")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    django_settings.configure(args.backend, args.redis_url)
    print(json.dumps(measure(args.backend, args.redis_url, Plan(args.quick))))


if __name__ == "__main__":
    main()
