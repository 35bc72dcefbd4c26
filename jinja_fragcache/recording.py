"""What lookups did: the outcome of the last one, a recording of them all,
and the versions nested fragments report to the fragment around them."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

from .render_state import current

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
    if _outcome.get() != outcome:  # a set() costs several times a get()
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
    :data:`EXPIRES`); and the page, if it is being recorded, what it holds."""
    page = _page.get()
    if page is not None:
        page.add(versions)
    state = current.get()
    if state is None:
        return
    collected = state.versions
    collected.update(versions)
    if soft_expiry is not None:
        known = collected.get(EXPIRES)
        if known is None or soft_expiry < float(known):
            collected[EXPIRES] = repr(soft_expiry)


#: Reported in place of a counter key by a fragment that did not cache: no
#: counter key can hold a NUL, so it never passes for one.
UNCACHED = "\x00uncached"


def report_uncached(name: str, counters: Iterable[str] = ()) -> None:
    """Tell the enclosing fragment, if any, that fragment *name* inside it
    did not cache (its ``if`` was false, its timeout 0, a vary value was
    refused, or the backend was down): the enclosing one must not freeze
    this render's output.  The page still holds it: its *counters* are
    what an invalidation of it would bump."""
    page = _page.get()
    if page is not None:
        page.add(counters)
        page.uncached = True
    state = current.get()
    if state is not None:
        state.versions.setdefault(UNCACHED, name)


class PageContents:
    """What one response holds, as :func:`page_contents` records it."""

    __slots__ = ("counters", "holes", "uncached")

    def __init__(self) -> None:
        #: The version counter keys of every fragment and cached view the
        #: response holds, hits and misses, nested ones included: each
        #: invalidation that would change the response bumps one of them.
        #: Ordered, without repeats.
        self.counters: dict[str, None] = {}
        #: How many holes were filled for this response: its output differs
        #: per request even where every fragment was a hit.
        self.holes = 0
        #: Whether some fragment rendered uncached.
        self.uncached = False

    def add(self, counters: Iterable[str]) -> None:
        self.counters.update((k, None) for k in counters if k[:1] != "\x00")


_page: contextvars.ContextVar[PageContents | None] = contextvars.ContextVar(
    "jinja_fragcache_page", default=None
)


@contextlib.contextmanager
def page_contents() -> Iterator[PageContents]:
    """Record what a response holds until the block ends (the Django
    bridge's surrogate-key middleware uses it)::

        with page_contents() as contents:
            html = template.render()
        contents.counters  # every fragment's counters, nested included

    Blocks nest: an inner one records for itself only.
    """
    contents = PageContents()
    token = _page.set(contents)
    try:
        yield contents
    finally:
        _page.reset(token)


def report_holes(count: int) -> None:
    """Tell the page, if it is being recorded, that *count* holes were
    filled for it."""
    page = _page.get()
    if page is not None:
        page.holes += count
