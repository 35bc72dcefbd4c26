"""Per-fragment counters, safe to update from many threads."""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass


@dataclass(slots=True)
class _Counters:
    hits: int = 0
    misses: int = 0
    stale: int = 0
    renders: int = 0
    errors: int = 0
    render_seconds: float = 0.0
    fetch_seconds: float = 0.0
    fetches: int = 0


class FragmentStats:
    """Hits, misses, stale serves, renders, timings and errors per fragment."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, _Counters] = {}

    def _counters(self, name: str) -> _Counters:
        counters = self._by_name.get(name)
        if counters is None:
            counters = self._by_name.setdefault(name, _Counters())
        return counters

    def record_fetch(
        self, name: str, seconds: float, *, hits: int, misses: int = 0, stale: int = 0
    ) -> None:
        """Record one round of lookups for *name*."""
        with self._lock:
            counters = self._counters(name)
            counters.fetches += 1
            counters.fetch_seconds += seconds
            counters.hits += hits
            counters.misses += misses
            counters.stale += stale

    def record_render(self, name: str, seconds: float, count: int = 1) -> None:
        with self._lock:
            counters = self._counters(name)
            counters.renders += count
            counters.render_seconds += seconds

    def record_error(self, name: str) -> None:
        with self._lock:
            self._counters(name).errors += 1

    def as_dict(self) -> dict[str, dict[str, float | int | bool]]:
        """Return ``{name: {...}}`` as plain data.

        Besides the counters, each fragment has ``avg_render_ms``,
        ``avg_fetch_ms`` and ``cheaper_to_render``: true when rendering the
        fragment took less time on average than fetching it, in which case
        caching it costs more than it saves.
        """
        with self._lock:
            items = [(name, copy.copy(c)) for name, c in self._by_name.items()]
        result: dict[str, dict[str, float | int | bool]] = {}
        for name, c in items:
            lookups = c.hits + c.misses + c.stale
            avg_render = c.render_seconds / c.renders * 1000 if c.renders else 0.0
            avg_fetch = c.fetch_seconds / c.fetches * 1000 if c.fetches else 0.0
            result[name] = {
                "hits": c.hits,
                "misses": c.misses,
                "stale": c.stale,
                "renders": c.renders,
                "errors": c.errors,
                "hit_rate": (c.hits + c.stale) / lookups * 100 if lookups else 0.0,
                "render_seconds": c.render_seconds,
                "fetch_seconds": c.fetch_seconds,
                "avg_render_ms": avg_render,
                "avg_fetch_ms": avg_fetch,
                "cheaper_to_render": bool(c.renders and c.fetches)
                and avg_render < avg_fetch,
            }
        return result

    def reset(self) -> None:
        with self._lock:
            self._by_name.clear()
