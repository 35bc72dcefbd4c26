"""Wall time of the in-process miss with one part taken away at a time: run by hand.

    python -m benchmarks.miss_parts [--rounds 15]

Where instructions (callgrind) and wall time disagree, this says where the
wall time goes.  Each part of the miss is replaced at run time (a
monkeypatch, undone after its batch) and timed in batches of 1,000 misses,
interleaved with the unpatched miss and django-jinja's (in an order
shuffled every round), on the benchmark's
one-fragment page with a vary value never rendered before each time; the
medians are printed.  "no cache work" is the floor: the tag's lookup
answers "render uncached" at once, so what is left is Jinja's call block
and the body's render.  A part whose removal moves the miss by less than
the spread of the rounds is not where the time goes.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from . import django_settings, peers

BATCH = 1000


@contextmanager
def _patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    """*owner*'s attribute *name* (its item, for a dict) is *value* inside."""
    if isinstance(owner, dict):
        saved, put = owner[name], owner.__setitem__
    else:
        # A class's own entry, as stored: getattr() unwraps a staticmethod.
        saved = vars(owner)[name] if isinstance(owner, type) else getattr(owner, name)
        put = lambda key, new: setattr(owner, key, new)  # noqa: E731
    put(name, value)
    try:
        yield
    finally:
        put(name, saved)


def _parts(ours: Any) -> dict[str, Callable[[], AbstractContextManager[None]]]:
    """Each part of our miss, and how to take it away."""
    from jinja2 import pass_context

    from jinja_fragcache import driving, stats, tagruntime
    from jinja_fragcache.backends.base import made
    from jinja_fragcache.flow import Rendered

    def plain_collect(self: Any, render: Any, index: int, live: Any = None) -> Any:
        start = time.perf_counter()
        body = str(render(index))
        seconds = time.perf_counter() - start
        return made(Rendered, (body, {}, seconds, None, None, ""))

    @pass_context
    def uncached(context: Any, *arguments: Any) -> Any:
        return tagruntime._Unfinished(ours.cache, context, [], None)

    environment = ours.page.environment
    lookup = next(name for name in environment.filters if "_lookup_fragment" in name)
    return {
        "no miss statistics": lambda: _patched(
            stats.FragmentStats, "record_fetched", lambda self, *args: None
        ),
        "no collectors, no context variables": lambda: _patched(
            driving.Driving, "_collect", plain_collect
        ),
        "no memo": lambda: _patched(ours.cache, "memo", None),
        "no cache work": lambda: _patched(environment.filters, lookup, uncached),
    }


def _timed(render: Callable[[], object]) -> float:
    start = time.perf_counter()
    for _ in range(BATCH):
        render()
    return (time.perf_counter() - start) / BATCH * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    django_settings.configure("memory", "redis://127.0.0.1:1/0")  # not used
    adapters = {
        a.name: a
        for a in peers.adapters("memory", "")
        if a.name in ("jinja-fragcache", "django-jinja")
    }
    for adapter in adapters.values():
        adapter.setup()
    ours, peer = adapters["jinja-fragcache"], adapters["django-jinja"]
    parts = _parts(ours)
    for _ in range(200):  # warm
        ours.render_miss()
        peer.render_miss()
    cases: dict[str, Callable[[], AbstractContextManager[None]]] = {
        "miss": nullcontext,
        "django-jinja": nullcontext,
        **parts,
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    order = list(cases)
    shuffle = random.Random(0).shuffle
    for _ in range(args.rounds):
        shuffle(order)  # no case always follows the same one
        for name in order:
            render = peer.render_miss if name == "django-jinja" else ours.render_miss
            with cases[name]():
                times[name].append(_timed(render))
    base = statistics.median(times["miss"])
    spread = statistics.quantiles(times["miss"], n=4)
    print(f"our miss: {base:.1f} µs (quartiles {spread[0]:.1f}–{spread[2]:.1f})")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.1f} µs | {median - base:+.1f} |")


if __name__ == "__main__":
    main()
