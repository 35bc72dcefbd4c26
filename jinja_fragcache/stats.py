"""Per-fragment counters, safe to update from many threads."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable, Mapping
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
    lost_invalidations: int = 0


#: Remembered hits (or fetched lookups) of one name queued before
#: :meth:`FragmentStats.record_hit` (``record_fetched``) adds them up itself.
QUEUED_HITS = 4096


class FragmentStats:
    """Hits, misses, stale serves, renders, timings and errors per fragment."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, _Counters] = {}
        #: Remembered hits not added up yet, one mark each, by name (see
        #: :meth:`record_hit`).
        self._marks: dict[str, list[None]] = {}
        #: Fetched lookups not added up yet, ``(fetched, rendered)`` each
        #: (``rendered`` ``None`` for a hit), by name (see
        #: :meth:`record_fetched`).
        self._fetched: dict[str, list[tuple[float, float | None]]] = {}

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

    def record_hit(self, name: str, count: int = 1) -> None:
        """Record hits answered without a fetch (remembered ones).

        The hottest path there is, so one hit takes no lock: it appends a
        mark to its name's list (atomic), and the marks are added up by the
        next reader, or once a name holds :data:`QUEUED_HITS`."""
        if count != 1:  # a collection's items: rarer, and counted at once
            with self._lock:
                counters = self._counters(name)
                counters.fetches += 1
                counters.hits += count
            return
        marks = self._marks.get(name)
        if marks is None:
            marks = self._marks.setdefault(name, [])
        marks.append(None)
        if len(marks) >= QUEUED_HITS:
            with self._lock:
                self._add_up()

    def _add_up(self) -> None:
        """Under the lock: count the marked remembered hits and misses."""
        for name, marks in list(self._marks.items()):  # a copy made in C
            count = len(marks)
            if count:
                # One slice: a mark appended meanwhile stays, for next time.
                del marks[:count]
                counters = self._counters(name)
                counters.fetches += count
                counters.hits += count
        for name, fetched in list(self._fetched.items()):
            count = len(fetched)
            if count:
                done, fetched[:count] = fetched[:count], []
                renders = [r for _, r in done if r is not None]
                counters = self._counters(name)
                counters.fetches += count
                counters.hits += count - len(renders)
                counters.misses += len(renders)
                counters.renders += len(renders)
                counters.fetch_seconds += sum(seconds for seconds, _ in done)
                counters.render_seconds += sum(renders)

    def record_fetched(
        self, name: str, fetched: float, rendered: float | None = None
    ) -> None:
        """Record one lookup of *name* answered by a fetch of *fetched*
        seconds: a hit, or, given *rendered*, a miss that then rendered for
        that many seconds.  Every hit or miss of one fragment takes this
        path: like a remembered hit, it takes no lock, but appends to its
        name's list, added up by the next reader."""
        lookups = self._fetched.get(name)
        if lookups is None:
            lookups = self._fetched.setdefault(name, [])
        lookups.append((fetched, rendered))
        if len(lookups) >= QUEUED_HITS:
            with self._lock:
                self._add_up()

    def record_render(self, name: str, seconds: float, count: int = 1) -> None:
        with self._lock:
            counters = self._counters(name)
            counters.renders += count
            counters.render_seconds += seconds

    def record_error(self, name: str) -> None:
        with self._lock:
            self._counters(name).errors += 1

    def record_lost_invalidation(self, count: int = 1) -> None:
        """Invalidations the backend could not take (queued for a replay),
        counted under the name ``"(invalidations)"``."""
        with self._lock:
            self._counters("(invalidations)").lost_invalidations += count

    def as_dict(self) -> dict[str, dict[str, float | int | bool]]:
        """Return ``{name: {...}}`` as plain data.

        Besides the counters, each fragment has ``avg_render_ms``,
        ``avg_fetch_ms`` and ``cheaper_to_render``: true when rendering the
        fragment took less time on average than fetching it, in which case
        caching it costs more than it saves.
        """
        with self._lock:
            self._add_up()
            items = [(name, copy.copy(c)) for name, c in self._by_name.items()]
        return {name: _figures(c) for name, c in items}

    def reset(self) -> None:
        with self._lock:
            self._marks.clear()
            self._fetched.clear()
            self._by_name.clear()


_COUNTED = (
    "hits",
    "misses",
    "stale",
    "renders",
    "errors",
    "render_seconds",
    "fetch_seconds",
    "fetches",
    "lost_invalidations",
)


def _figures(c: _Counters) -> dict[str, float | int | bool]:
    lookups = c.hits + c.misses + c.stale
    avg_render = c.render_seconds / c.renders * 1000 if c.renders else 0.0
    avg_fetch = c.fetch_seconds / c.fetches * 1000 if c.fetches else 0.0
    return {
        **{field: getattr(c, field) for field in _COUNTED},
        "hit_rate": (c.hits + c.stale) / lookups * 100 if lookups else 0.0,
        "avg_render_ms": avg_render,
        "avg_fetch_ms": avg_fetch,
        "cheaper_to_render": bool(c.renders and c.fetches) and avg_render < avg_fetch,
    }


def combine(
    snapshots: Iterable[Mapping[str, object]],
) -> dict[str, dict[str, float | int | bool]]:
    """Add up :meth:`FragmentStats.as_dict` snapshots (of several processes,
    say) and derive the rates and averages again.

    Snapshots are read back from a shared store: a figure that is not a
    number (someone else wrote there) is left out, never a crash.
    """
    totals: dict[str, _Counters] = {}
    for snapshot in snapshots:
        for name, figures in snapshot.items():
            if not isinstance(figures, dict):
                continue
            counters = totals.setdefault(name, _Counters())
            for field in _COUNTED:
                value = figures.get(field, 0)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    setattr(counters, field, getattr(counters, field) + value)
    return {name: _figures(c) for name, c in totals.items()}
