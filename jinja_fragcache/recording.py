"""What lookups did: the outcome of the last one, a recording of them all,
and the versions nested fragments report to the fragment around them."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from typing import NamedTuple

#: The versions the fragments rendered so far inside an enclosing fragment
#: depend on; ``None`` outside any fragment.
collector: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "jinja_fragcachecollector", default=None
)

#: What the last lookup in this context ended as; see :func:`last_outcome`.
_outcome: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "jinja_fragcache_outcome", default=None
)


class Lookup(NamedTuple):
    """One lookup, as :func:`recording` lists it."""

    name: str
    key: str
    variants: int
    outcome: str
    fetch_ms: float
    render_ms: float


_lookups: contextvars.ContextVar[list[Lookup] | None] = contextvars.ContextVar(
    "jinja_fragcache_lookups", default=None
)


@contextlib.contextmanager
def recording() -> Iterator[list[Lookup]]:
    """List every lookup made in this thread or task until the block ends
    (the debug toolbar panel uses it)::

        with recording() as lookups:
            template.render()
    """
    lookups: list[Lookup] = []
    token = _lookups.set(lookups)
    try:
        yield lookups
    finally:
        _lookups.reset(token)


def note(
    outcome: str, name: str, keys: Sequence[str], fetch: float, render: float
) -> None:
    _outcome.set(outcome)
    lookups = _lookups.get()
    if lookups is not None:
        key = keys[0] if keys else ""
        lookups.append(
            Lookup(name, key, len(keys), outcome, fetch * 1000, render * 1000)
        )


def last_outcome() -> str | None:
    """How the last ``render*`` call of this thread or task was answered:
    ``"hit"``, ``"stale"`` (an expired copy, served while another request
    refreshes it), ``"miss"`` (rendered here) or ``"uncached"`` (the cache
    was bypassed or down).  For a collection, the most telling of its items.
    """
    return _outcome.get()


#: Reported with the counters: the soonest soft expiry of the fragments
#: inside, as text, so that an outer entry expires no later (cacheability
#: bubbles up, as Drupal's max-age does).
EXPIRES = "\x00expires"


def report(versions: dict[str, str], soft_expiry: float | None) -> None:
    """Tell the enclosing fragment, if any, what this one depends on and
    when it goes stale (the soonest expiry inside is kept, as
    :data:`EXPIRES`)."""
    collected = collector.get()
    if collected is None:
        return
    collected.update(versions)
    if soft_expiry is not None:
        known = collected.get(EXPIRES)
        if known is None or soft_expiry < float(known):
            collected[EXPIRES] = repr(soft_expiry)


#: Reported in place of a counter key by a fragment that did not cache: no
#: counter key can hold a NUL, so it never passes for one.
UNCACHED = "\x00uncached"


def report_uncached(name: str) -> None:
    """Tell the enclosing fragment, if any, that fragment *name* inside it
    did not cache (its ``if`` was false, its timeout 0, a vary value was
    refused, or the backend was down): the enclosing one must not freeze
    this render's output."""
    collected = collector.get()
    if collected is not None:
        collected.setdefault(UNCACHED, name)
