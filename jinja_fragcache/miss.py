"""The miss protocol: everything a lookup does once the first read did not
find every entry fresh.

In order: nested fragments' counters are checked (one more read at most,
however deep the nesting); stale entries are served while one renderer
refreshes them; cold entries are claimed with a lock (``add``), and a
request that lost the lock waits up to ``lock_wait`` for the holder, or
takes the lock over when the holder released it without writing; every
missing version counter is created *before* the render, so an
invalidation during the render makes the new entry invalid instead of
being lost; the body is rendered, sealed (its per-request values become
holes), checked by the ``store_filter`` and written back in one round trip;
and every lock this request holds is released on every path, failures
included.

Each step is a generator that *yields* its I/O (see :mod:`.flow`), so the
sync and async drivers of :class:`~jinja_fragcache.cache.FragmentCache`
share every line.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import filling
from .backends.base import UNCLAIMED, WON, made
from .entry import Entry
from .flow import FAILED, Gen, Rendered, new_version
from .holes import MARK
from .keys import FragmentCacheWarning
from .lookup import COLD_WON, Read, counters_of, lookup, settle, texts, won_alone
from .recording import (
    EXPIRES,
    UNCACHED,
    note,
    report,
    report_uncached,
)

logger = logging.getLogger("jinja_fragcache")

if TYPE_CHECKING:
    from .cache import FragmentCache
    from .requests import FragmentRequest


def miss_flow(
    cache: FragmentCache,
    requests: Sequence[FragmentRequest],
    wait: bool,
    read: Read,
    found: Any,
) -> Gen:
    """Everything but the plain hit: nested checks, stale serving, the
    lock, waiting, rendering and writing back."""
    if found is FAILED:
        return (yield from render_uncached(cache, requests))
    first = requests[0]
    keys, own, versions, start = read.keys, read.own, read.versions, read.start
    if found is COLD_WON or won_alone(read):
        return (yield from _won_flow(cache, first, read))
    entries = yield from settle(cache, read.entries, versions)
    if entries is FAILED:
        return (yield from render_uncached(cache, requests))

    now = time.time()
    results: list[str | None] = [None] * len(requests)
    stale = [i for i, e in enumerate(entries) if e and not e.is_fresh(now)]
    cold = [i for i, e in enumerate(entries) if e is None]
    writable = True
    won: list[int] = []
    contested = stale + cold if wait else stale
    token = read.token or new_version()
    if read.claims is not None:
        # The first read claimed what the backend saw in need of a render;
        # what it judged otherwise (a clock apart) is claimed the usual way.
        claims = read.claims
        won = [i for i, claim in enumerate(claims) if claim == WON]
        contested = [i for i in contested if claims[i] == UNCLAIMED]
    if contested:
        claimed = yield from _claim(cache, read.locks, contested, token)
        if claimed is FAILED:
            writable = False
        else:
            won += claimed

    waiting = [i for i in cold if wait and writable and i not in won]
    deadline = time.monotonic() + cache.lock_wait
    while waiting and time.monotonic() < deadline:
        yield ("sleep", cache.poll_interval)
        again = Read([requests[i] for i in waiting], cache.prefix, cache.shards)
        again.versions = versions
        arrivals = yield from lookup(cache, [requests[i] for i in waiting], again)
        if arrivals is FAILED:
            writable = False
            break
        for i, arrived in zip(waiting, arrivals, strict=True):
            if arrived is not None and arrived.is_fresh(time.time()):
                entries[i] = arrived
        waiting = [i for i in waiting if entries[i] is None]
        if waiting:
            # A holder that gave up (its render or its write failed)
            # has released the lock: take it over instead of sleeping
            # out lock_wait.
            taken = yield from _take_over(cache, read.locks, waiting, token)
            if taken is FAILED:
                writable = False
                break
            won += taken
            waiting = [i for i in waiting if i not in taken]

    to_render = [i for i, e in enumerate(entries) if e is None or i in won]
    served_stale = 0
    for i, usable in enumerate(entries):
        if usable is not None and i not in won:
            stored = usable.body
            if MARK in stored:
                stored = yield ("open", requests[i], stored, i)
            results[i] = stored
            served_stale += not usable.is_fresh(now)
            report(usable.versions, usable.soft_expiry)
    fetched = time.perf_counter() - start
    cache.statistics.record_fetch(
        first.name,
        fetched,
        hits=len(requests) - len(to_render) - served_stale,
        misses=len(to_render),
        stale=served_stale,
    )
    if not to_render:
        note("stale" if served_stale else "hit", first.name, keys, fetched, 0.0)
        return results

    # Snapshot every version before rendering, creating the missing
    # counters, so an invalidation during the render makes this entry
    # invalid instead of being lost.
    needed = dict.fromkeys(k for i in to_render for k in own[i])
    missing = {k: new_version() for k in needed if versions.get(k) is None}
    if missing and writable:
        created = yield ("add_many", missing, None)
        if created is FAILED:
            writable = False
        else:
            lost = [k for k, ok in zip(missing, created, strict=True) if not ok]
            versions.update((k, v.decode("latin-1")) for k, v in missing.items())
            if lost:
                current = yield ("get_many", lost)
                if current is FAILED:
                    writable = False
                else:
                    versions.update(zip(lost, texts(current), strict=True))
                    corrupt = [k for k in lost if versions[k] is None]
                    if corrupt:
                        replaced = yield from _replace_corrupt(
                            cache, first.name, corrupt
                        )
                        if replaced is FAILED:
                            writable = False
                        else:
                            versions.update(replaced)

    try:
        rendered = yield ("render", to_render)
    except BaseException:  # let the next request render instead of waiting
        yield from _write(cache, {}, None, read.locks, won, token)
        raise
    seconds = _recorded(cache, first.name, rendered)
    writes: dict[str, bytes | Entry] = {}
    try:
        for i, done in zip(to_render, rendered, strict=True):
            results[i] = done.body
            _store(cache, requests[i], keys[i], own[i], versions, done, writes)
    except BaseException:  # a store_filter that refuses loudly
        yield from _write(cache, {}, None, read.locks, won, token)
        raise
    # Whatever failed before, a lock this request holds is released, or
    # every later request would wait for it (the breaker skips this
    # when the backend itself is down).
    hard_ttl = _hard_ttl(cache, first.timeout)
    yield from _write(
        cache, writes if writable else {}, hard_ttl, read.locks, won, token
    )
    # Noted after the render, whose own fragments note theirs first.
    note("miss", first.name, keys, fetched, seconds)
    return results


def _won_flow(cache: FragmentCache, request: FragmentRequest, read: Read) -> Gen:
    """:func:`miss_flow` of the plain miss: one request whose lock the
    first read won and whose counters it found or created, so there is
    nothing to settle, wait for or create: render, store, release (the
    first read claimed, so the backend writes and releases in one call)."""
    key, token, name = read.keys[0], read.token, request.name
    fetched = time.perf_counter() - read.start
    locks = read.locks
    writes: dict[str, bytes | Entry] = {}
    done = None
    try:
        (done,) = yield ("render", _FIRST)
        cache.statistics.record_fetched(name, fetched, done.seconds)
        _store(cache, request, key, read.own[0], read.versions, done, writes)
    except BaseException:  # a failed render, a store_filter that refuses
        # loudly: let the next request render instead of waiting
        if done is None:  # a render that ended was counted already
            cache.statistics.record_fetch(name, fetched, hits=0, misses=1)
        yield ("write_releasing", {}, None, locks, token)
        raise
    yield ("write_releasing", writes, _hard_ttl(cache, request.timeout), locks, token)
    note("miss", name, read.keys, fetched, done.seconds)
    return [done.body]


def render_won(
    cache: FragmentCache,
    request: FragmentRequest,
    read: Read,
    render: Callable[[int], str],
) -> list[str]:
    """:func:`_won_flow`, called straight by the sync ``finish``: the
    commonest miss, spared the driving of a generator."""
    key, token, name = read.keys[0], read.token, request.name
    fetched = time.perf_counter() - read.start
    locks = read.locks
    writes: dict[str, bytes | Entry] = {}
    done = None
    try:
        done = cache._collect(render, 0)
        cache.statistics.record_fetched(name, fetched, done.seconds)
        _store(cache, request, key, read.own[0], read.versions, done, writes)
    except BaseException:  # a failed render, a store_filter that refuses
        # loudly: let the next request render instead of waiting
        if done is None:  # a render that ended was counted already
            cache.statistics.record_fetch(name, fetched, hits=0, misses=1)
        cache._call(name, ("write_releasing", {}, None, locks, token))
        raise
    op = ("write_releasing", writes, _hard_ttl(cache, request.timeout), locks, token)
    cache._call(name, op)
    note("miss", name, read.keys, fetched, done.seconds)
    return [done.body]


#: What ``_won_flow`` renders: its one request.
_FIRST = (0,)


def _hard_ttl(cache: FragmentCache, timeout: float | None) -> float | None:
    """How long an entry of *timeout* lives: its stale grace past it."""
    return None if timeout is None else timeout + cache.stale_grace


def _store(
    cache: FragmentCache,
    request: FragmentRequest,
    key: str,
    own: tuple[str, ...],
    versions: dict[str, str | None],
    done: Rendered,
    writes: dict[str, bytes | Entry],
) -> None:
    """Add to *writes* the entry of *done* (a render of *request*), unless
    it must not be stored: a fragment inside did not cache, a block inside
    belongs to another template, or the ``store_filter`` refused it.  Its
    counters are reported to the fragment around it in any case."""
    if done.unfilled:
        filling.unfilled(cache, request, done.unfilled)
    timeout = request.timeout
    # Plain zip(): a keyword costs more than the rest of the line.
    snapshot: dict[str, str] = dict(zip(own, map(versions.get, own)))  # type: ignore[arg-type]  # noqa: B905
    if not all(snapshot.values()):  # neither read nor made: "" matches nothing
        snapshot = {k: v or "" for k, v in snapshot.items()}
    expires = None if timeout is None else time.time() + timeout
    reported = done.versions  # by the fragments inside: mostly none
    if reported:
        snapshot.update(reported)
        inner_expiry = snapshot.pop(EXPIRES, None)
        if inner_expiry is not None:
            expires = _sooner(expires, inner_expiry)
    report(snapshot, expires)  # an uncached inner goes further up too
    if reported and UNCACHED in snapshot:
        _not_frozen(cache, request.name, snapshot.pop(UNCACHED))
        return
    stored = filling.sealed(cache, request, done)
    if stored is None:
        _foreign_block(request.name)
        return
    if cache.store_filter is None or cache.store_filter(request, stored):
        fields = (stored, expires, request.template, request.digest, snapshot)
        entry = made(Entry, fields)
        writes[key] = entry if cache.keeps_entries else entry.encode()


def _replace_corrupt(cache: FragmentCache, name: str, counters: list[str]) -> Gen:
    """Overwrite counters that hold something else than a version (present,
    so ``add`` could not create them); their new versions, or ``FAILED``."""
    cache.statistics.record_error(name)
    logger.error(
        "fragment %r: replacing unreadable version counter(s) %s",
        name,
        ", ".join(counters),
    )
    fresh = {k: new_version() for k in counters}
    if (yield ("set_many", fresh, None)) is FAILED:
        return FAILED
    return {k: v.decode("ascii") for k, v in fresh.items()}


def _take_over(
    cache: FragmentCache, locks: list[str], waiting: list[int], token: bytes
) -> Gen:
    """Claim the locks of *waiting* (*locks* holds every request's) whose
    holders released them."""
    held = yield ("get_many", [locks[i] for i in waiting])
    if held is FAILED:
        return FAILED
    free = [i for i, value in zip(waiting, held, strict=True) if value is None]
    if not free:
        return []
    return (yield from _claim(cache, locks, free, token))


def _claim(
    cache: FragmentCache, locks: list[str], indices: list[int], token: bytes
) -> Gen:
    """Take the re-render locks of *indices* in one ``add_many``; the ones
    won, or ``FAILED``."""
    claimed = yield (
        "add_many",
        {locks[i]: token for i in indices},
        cache.lock_timeout,
    )
    if claimed is FAILED:
        return FAILED
    return [i for i, ok in zip(indices, claimed, strict=True) if ok]


def _write(
    cache: FragmentCache,
    writes: dict[str, bytes | Entry],
    timeout: float | None,
    locks: list[str],
    won: list[int],
    token: bytes,
) -> Gen:
    """Store *writes* and release the locks of *won* (*locks* holds every
    request's): one round trip where the backend can (releasing a lock only
    while it holds *token*)."""
    held = [locks[i] for i in won]
    if cache.compound:
        if writes or held:
            yield ("write_releasing", writes, timeout, held, token)
        return
    if writes:
        yield ("set_many", writes, timeout)
    for lock in held:
        yield ("delete", lock)


def _sooner(own: float | None, inner: str) -> float:
    """An entry's soft expiry: its own, or its soonest inner's if sooner
    (``None`` never expires)."""
    return float(inner) if own is None else min(own, float(inner))


def _not_frozen(cache: FragmentCache, outer: str, inner: str) -> None:
    if cache.debug:
        warnings.warn(
            f"fragment {outer!r} is not cached on this render: fragment "
            f"{inner!r} inside it did not cache (its 'if' was false, its "
            "timeout is 0, or a vary value was refused), and freezing its "
            "output into the outer entry would serve it to everyone",
            FragmentCacheWarning,
            stacklevel=2,
        )


def _foreign_block(name: str) -> None:
    warnings.warn(
        f"fragment {name!r} is not cached: a {{% nocache %}} block inside it "
        "belongs to another template (an include, an imported macro, a "
        "block of a child template), which the fragment cannot render on a "
        "hit; move the block into the fragment's own template",
        FragmentCacheWarning,
        stacklevel=2,
    )


def render_uncached(cache: FragmentCache, requests: Sequence[FragmentRequest]) -> Gen:
    report_uncached(requests[0].name, counters_of(cache.prefix, requests, cache.shards))
    rendered = yield ("render", range(len(requests)))
    seconds = _recorded(cache, requests[0].name, rendered)
    note("uncached", requests[0].name, [], 0.0, seconds)
    return [r.body for r in rendered]


def _recorded(cache: FragmentCache, name: str, rendered: list[Rendered]) -> float:
    """Record *rendered* in the statistics; the seconds they took."""
    seconds = (
        rendered[0].seconds if len(rendered) == 1 else sum(r.seconds for r in rendered)
    )
    cache.statistics.record_render(name, seconds, len(rendered))
    return seconds
