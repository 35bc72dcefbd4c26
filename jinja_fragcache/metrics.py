"""Prometheus metrics from the per-fragment counters (``pip install
"jinja-fragcache[prometheus]"``).

    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(FragmentCacheCollector(env.fragment_cache))
    generate_latest(registry)  # fragcache_hits_total{fragment="sidebar"} 41.0 …

A collector reads its figures at every scrape, from a
:class:`~jinja_fragcache.FragmentCache` (this process's counters) or from any
callable that returns :meth:`FragmentCache.stats`-shaped data, such as the
sum of several processes' counters (:func:`jinja_fragcache.stats.combine`;
``django_bridge.metrics`` passes its site-wide figures).

The core keeps totals per fragment, not each render's time, so render and
fetch times are counters of seconds beside counters of renders and fetches
(``rate(fragcache_render_seconds_total[5m]) / rate(fragcache_renders_total[5m])``
is the mean render time), not histograms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .cache import FragmentCache

if TYPE_CHECKING:
    from prometheus_client.core import CounterMetricFamily

#: ``FragmentCache.stats()``-shaped data: ``{name: {"hits": 3, ...}}``.
StatsSource = Callable[[], Mapping[str, Mapping[str, Any]]]

#: The name under which the core counts invalidations it could not store.
INVALIDATIONS = "(invalidations)"

#: ``(figure, metric name without the namespace, help)``, per fragment.
FRAGMENT_COUNTERS = (
    ("hits", "hits", "Lookups answered by a fresh cached entry."),
    ("misses", "misses", "Lookups that found no usable entry."),
    (
        "stale",
        "stale",
        "Lookups answered by an expired entry while one request re-rendered it.",
    ),
    ("errors", "errors", "Cache errors met while serving the fragment."),
    ("renders", "renders", "Bodies rendered on a miss (one per cache_each item)."),
    ("render_seconds", "render_seconds", "Seconds spent rendering bodies."),
    ("fetches", "fetches", "Rounds of cache reads (one serves a whole cache_each)."),
    ("fetch_seconds", "fetch_seconds", "Seconds spent reading the cache."),
)


def _prometheus() -> Any:
    try:
        from prometheus_client import core
    except ImportError:
        raise ImportError(
            "Prometheus metrics need prometheus_client: "
            'pip install "jinja-fragcache[prometheus]"'
        ) from None
    return core


class FragmentCacheCollector:
    """A Prometheus collector of a fragment cache's counters.

    Every fragment name is a ``fragment`` label on ``<namespace>_hits_total``,
    ``_misses_total``, ``_stale_total``, ``_errors_total``, ``_renders_total``,
    ``_render_seconds_total``, ``_fetches_total`` and
    ``_fetch_seconds_total``; ``<namespace>_lost_invalidations_total`` counts
    invalidations the backend could not take (each is replayed later).

    :param source: a :class:`FragmentCache` (its :meth:`~FragmentCache.stats`)
        or a callable returning data of that shape.
    :param namespace: the prefix of every metric name.
    :raises ImportError: when prometheus_client is not installed.
    """

    def __init__(
        self, source: FragmentCache | StatsSource, *, namespace: str = "fragcache"
    ) -> None:
        self._core = _prometheus()
        self._read: StatsSource = (
            source.stats if isinstance(source, FragmentCache) else source
        )
        self.namespace = namespace

    def describe(self) -> Iterator[CounterMetricFamily]:
        """The metric names, without reading the figures: registering into an
        ``auto_describe`` registry (the default ``REGISTRY``) must not reach
        the cache."""
        yield from self._families({})

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield from self._families(self._read())

    def _families(
        self, stats: Mapping[str, Mapping[str, Any]]
    ) -> Iterator[CounterMetricFamily]:
        counter = self._core.CounterMetricFamily
        fragments = sorted(name for name in stats if name != INVALIDATIONS)
        for figure, metric, documentation in FRAGMENT_COUNTERS:
            family = counter(
                f"{self.namespace}_{metric}", documentation, labels=["fragment"]
            )
            for name in fragments:
                family.add_metric([name], _number(stats[name].get(figure)))
            yield family
        lost = sum(_number(f.get("lost_invalidations")) for f in stats.values())
        yield counter(
            f"{self.namespace}_lost_invalidations",
            "Invalidations the backend could not take, queued for a replay.",
            value=lost,
        )


def _number(value: object) -> float:
    # Figures may come back from a shared store: anything but a number is 0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)
