"""The one lookup/render path, shared by every tag, engine and helper.

:class:`FragmentCache` owns a backend and the rules of a lookup: versions,
digests, soft expiry with a stale grace, the re-render lock, fail-open and
statistics.  The rules are written once, as a generator that *yields* each
piece of I/O (a backend call, a render, a sleep) and is driven by a sync or
an async driver.  That is how ``render`` and ``render_async`` share every
line of logic without either one blocking the other's way of doing I/O.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, TypeVar

from . import filling, holes
from .backends.base import Backend, compound, made
from .backends.memory import MemoryBackend
from .breaker import CircuitBreaker
from .driving import Driving
from .flow import FAILED, Rendered
from .identity import VaryIdentity
from .invalidation import PendingBumps, bump_flow, delete_flow
from .keys import (
    FragmentCacheWarning,
    check_prefix,
    check_shards,
    make_fragment_key,
    name_version_keys,
    tag_version_key,
    variant_version_key,
)
from .lookup import (
    COLD_WON,
    DecodedEntries,
    Pending,
    Read,
    check,
    cold_won,
    counters_of,
    first_read,
    took,
    won_alone,
)
from .memo import HitMemo, Remembered
from .miss import miss_flow, render_uncached, render_won
from .recording import (
    last_outcome,
    note,
    recording,
    report,
    report_uncached,
)
from .requests import FragmentRequest, build_requests, check_tags
from .stats import FragmentStats

__all__ = [
    "FragmentCache",
    "FragmentRequest",
    "build_requests",
    "check_tags",
    "last_outcome",
    "recording",
]

logger = logging.getLogger("jinja_fragcache")

_T = TypeVar("_T")


def _counts_changes(backend: object) -> bool:
    """Whether *backend* counts its changes (see ``backends.base``)."""
    return hasattr(backend, "generation") and getattr(backend, "counts_changes", True)


def _skipped(requests: Sequence[FragmentRequest]) -> list[int]:
    """The requests that bypass the cache (timeout 0, or a refused vary)."""
    if len(requests) == 1:  # the common case, kept cheap
        return [0] if requests[0].timeout == 0 else []
    return [i for i, r in enumerate(requests) if r.timeout == 0]


def _parts(count: int, skipped: list[int]) -> tuple[list[int], list[int]]:
    left_out = set(skipped)
    return [i for i in range(count) if i not in left_out], skipped


def _shifted(render: Callable[[int], _T], indices: list[int]) -> Callable[[int], _T]:
    """*render* of a sub-batch: its item ``j`` is item ``indices[j]``."""
    return lambda j: render(indices[j])


class FragmentCache(Driving):
    """A backend plus the rules of fragment caching.

    :param backend: where entries live; a fresh :class:`MemoryBackend` when
        ``None``.
    :param prefix: starts every key, so several sites can share a server.
    :param stale_grace: seconds an entry is kept past its timeout, to be
        served while one renderer refreshes it.
    :param lock_timeout: seconds the re-render lock lives if its holder dies.
    :param lock_wait: seconds a request with no stale copy waits for another
        renderer before rendering itself.
    :param breaker_cooldown: seconds a failing backend is left alone.
    :param fail_open: when true (the default), a backend error renders the
        fragment uncached and is logged; when false it propagates.
    :param store_filter: ``store_filter(request, stored)`` is asked before a
        rendered fragment is stored, with its holes already punched; false
        keeps it out of the cache (the body is still served).  The Django
        bridge refuses leftover CSRF tokens here.
    :param identity: the :class:`~jinja_fragcache.identity.VaryIdentity`
        that turns vary values into keys; a fresh one when ``None``.
    :param debug: development checks: a vary value with no identity is an
        error instead of a warning.
    :param hole_filler: punches per-request values (a CSRF token) out of
        stored bodies and fills them in for each request; see
        :mod:`jinja_fragcache.holes`.  The Django bridge sets one.
    :param on_invalidated: ``on_invalidated(counters)`` is called with the
        version counters an invalidation bumped, once the bump is stored
        (for a queued bump, once its replay is), never before: the hook
        for purging a CDN.  Its errors are logged, never raised.
    """

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        prefix: str = "fragcache",
        stale_grace: float = 60.0,
        lock_timeout: float = 30.0,
        lock_wait: float = 2.0,
        poll_interval: float = 0.05,
        breaker_cooldown: float = 5.0,
        fail_open: bool = True,
        store_filter: Callable[[FragmentRequest, str], bool] | None = None,
        identity: VaryIdentity | None = None,
        debug: bool = False,
        hole_filler: holes.HoleFiller | None = None,
        on_invalidated: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.backend: Backend = MemoryBackend() if backend is None else backend
        self.prefix = check_prefix(prefix)
        #: Slots each name's variants spread over (a cluster's
        #: ``name_shards``; 1 everywhere else): see :mod:`.keys`.
        self.shards = check_shards(getattr(self.backend, "name_shards", 1))
        # A backend with a near cache (RedisBackend) tracks this prefix.  Looked
        # up on the class: a proxy's __getattr__ is not asked (it may fail).
        if callable(getattr(type(self.backend), "bind_prefix", None)):
            self.backend.bind_prefix(self.prefix)  # type: ignore[attr-defined]
        #: Whether a miss takes the backend's two-trip path
        #: (``read_claiming``, ``write_releasing``).
        self.compound = compound(self.backend)
        #: Whether ``write_releasing`` takes entries as they are, not
        #: encoded (an in-process backend's, which nothing else reads).
        self.keeps_entries = self.compound and getattr(
            self.backend, "keeps_entries", False
        )
        #: Whether several counters are bumped in one call (``incr_many``).
        self.batched_incr = callable(getattr(self.backend, "incr_many", None))
        #: Checked hits, on a backend that counts its changes (see
        #: :mod:`jinja_fragcache.memo`); ``None`` on any other.
        self.memo = HitMemo() if _counts_changes(self.backend) else None
        if min(stale_grace, lock_wait) < 0 or min(lock_timeout, poll_interval) <= 0:
            raise ValueError(
                "stale_grace and lock_wait must be >= 0, "
                "lock_timeout and poll_interval > 0"
            )
        self.stale_grace = stale_grace
        self.lock_timeout = lock_timeout
        self.lock_wait = lock_wait
        self.poll_interval = poll_interval
        self.breaker = CircuitBreaker(breaker_cooldown)
        self.fail_open = fail_open
        self.store_filter = store_filter
        #: How vary values become keys; register converters on it.
        self.identity = identity or VaryIdentity()
        self.debug = debug
        self.holes = hole_filler
        self.on_invalidated = on_invalidated
        self.statistics = FragmentStats()
        #: Invalidations still to make: see :mod:`jinja_fragcache.invalidation`.
        self.pending = PendingBumps(self._replay_sync, lambda: self.breaker.cooldown)
        # Entries are immutable bytes, so their decoded form can be kept:
        # a hit on the same bytes skips the parse.
        self._decoded = DecodedEntries()

    def __repr__(self) -> str:
        return f"<FragmentCache {type(self.backend).__name__} prefix={self.prefix!r}>"

    # -- keys --------------------------------------------------------------

    def key_for(self, name: str, *vary: object) -> str:
        """The entry key of one variant: what ``cache_key_for`` shows."""
        return make_fragment_key(
            name, vary, prefix=self.prefix, identity=self.identity, shards=self.shards
        )

    # -- rendering ---------------------------------------------------------

    def render(self, request: FragmentRequest, render: Callable[[], str]) -> str:
        """Return the cached output of *request*, rendering it if needed."""
        return self.render_many([request], lambda _: render(), wait=True)[0]

    async def render_async(
        self, request: FragmentRequest, render: Callable[[], Awaitable[str]]
    ) -> str:
        """Async :meth:`render`; *render* returns an awaitable."""
        results = await self.render_many_async([request], lambda _: render(), wait=True)
        return results[0]

    def render_many(
        self,
        requests: Sequence[FragmentRequest],
        render: Callable[[int], str],
        *,
        wait: bool = False,
    ) -> list[str]:
        """Return the output of every request, in order, fetched together.

        All entries are read in one round trip; only the misses are rendered
        (``render(i)`` renders request ``i``) and they are written back in one
        round trip.  With *wait*, a miss whose re-render lock another request
        holds waits up to ``lock_wait`` for it; collections do not wait.
        """
        found = self.lookup(requests, wait=wait)
        return found if type(found) is list else self.finish(found, render)  # type: ignore[arg-type]

    async def render_many_async(
        self,
        requests: Sequence[FragmentRequest],
        render: Callable[[int], Awaitable[str]],
        *,
        wait: bool = False,
    ) -> list[str]:
        """Async :meth:`render_many`; *render* returns an awaitable."""
        found = await self.alookup(requests, wait=wait)
        if type(found) is list:
            return found
        return await self.afinish(found, render)  # type: ignore[arg-type]

    def remembered(
        self, key: Hashable, fill: Callable[[Remembered], str] | None = None
    ) -> str | None:
        """The output of the hit remembered under *key* (see :attr:`memo`),
        if the backend has not changed since and it is still fresh.  A body
        with holes is answered only with *fill*, which fills them.  Asked
        only where there is a memo (every caller checks)."""
        try:
            found = self.memo.get(key)  # type: ignore[union-attr]
        except TypeError:  # an unhashable key: never kept
            found = None
        if (
            found is None
            # Read as it is: this is every remembered hit's path, a
            # remembered generation is an int already, and a backend with a
            # memo has a generation.
            or found.generation != self.backend.generation  # type: ignore[attr-defined]
            or self.pending.has_failed
            or self.debug
            or (found.soft_expiry is not None and time.time() >= found.soft_expiry)
            or (fill is None and found.holed)
        ):
            return None
        name = found.request.name
        report(found.versions, found.soft_expiry)
        self.statistics.record_hit(name, found.variants)
        note("hit", name, found.keys, 0.0, 0.0)
        return fill(found) if found.holed and fill is not None else found.body

    def lookup(
        self,
        requests: Sequence[FragmentRequest],
        *,
        wait: bool = False,
        memo_key: Hashable = None,
    ) -> list[str] | Pending:
        """The first half of :meth:`render_many`, which needs no render: the
        bodies, when one read finds every entry fresh and whole (no hole to
        fill); else the :class:`~.lookup.Pending` that :meth:`finish` takes
        on with the render.  The tags compile a hit to this call alone.

        With *memo_key*, a fresh whole hit of one request is remembered
        under it for :meth:`remembered`."""
        # Queued invalidations go first: a read before them could find what
        # they clear, so while they cannot be made, nothing is read.
        skipped = _skipped(requests)
        if self.pending.has_failed and not self.pending.replay():
            skipped = list(range(len(requests)))
        if skipped:
            return Pending(requests, wait, skipped)
        read = Read(requests, self.prefix, self.shards)
        # A memo key comes with a memo, which only a backend that counts its
        # changes has (its generation: see remembered()).
        generation = None if memo_key is None else self.backend.generation  # type: ignore[attr-defined]
        found = self._call(requests[0].name, first_read(self, read, wait))
        if cold_won(read, found):  # the commonest miss: finish() renders it
            return made(Pending, (requests, wait, None, read, COLD_WON, None))
        return self._first(
            requests, wait, read, took(read, found), memo_key, generation
        )

    async def alookup(
        self,
        requests: Sequence[FragmentRequest],
        *,
        wait: bool = False,
        memo_key: Hashable = None,
    ) -> list[str] | Pending:
        """Async :meth:`lookup`."""
        skipped = _skipped(requests)
        if self.pending.has_failed and not await self._areplayed():
            skipped = list(range(len(requests)))
        if skipped:
            return Pending(requests, wait, skipped)
        read = Read(requests, self.prefix, self.shards)
        generation = None if memo_key is None else self.backend.generation  # type: ignore[attr-defined]
        found = await self._acall(requests[0].name, first_read(self, read, wait))
        if cold_won(read, found):
            return made(Pending, (requests, wait, None, read, COLD_WON, None))
        return self._first(
            requests, wait, read, took(read, found), memo_key, generation
        )

    def _first(
        self,
        requests: Sequence[FragmentRequest],
        wait: bool,
        read: Read,
        found: Any,
        memo_key: Hashable,
        generation: int | None,
    ) -> list[str] | Pending:
        """What the first read found: the bodies of a fresh hit (remembered
        under *memo_key*, if given), else what :meth:`finish` takes on."""
        hits = self._hits(requests, read, found)
        if hits is not None and generation is not None:  # a memo key given
            self._remember(memo_key, generation, read, hits, requests[0])
        if hits is not None and not self.debug:
            for body in hits:
                if holes.MARK in body:  # holes to fill: finish() does it
                    break
            else:
                return hits
        return made(Pending, (requests, wait, None, read, found, hits))

    def _remember(
        self,
        key: Hashable,
        generation: int | None,
        read: Read,
        hits: list[str],
        request: FragmentRequest,
    ) -> None:
        """Keep a fresh hit for :meth:`remembered`: of one request, or of
        a collection whose items have no holes (its output is theirs
        joined, and it depends on what each of them does)."""
        if self.memo is None or generation is None or self.debug:
            return
        remembered = Remembered.of(generation, hits, read, request)
        if remembered is not None:
            self.memo.keep(key, remembered)

    def finish(self, pending: Pending, render: Callable[[int], str]) -> list[str]:
        """The second half of :meth:`render_many`: what :meth:`lookup` left."""
        if pending.found is COLD_WON:  # the commonest miss, first
            return render_won(self, pending.requests[0], pending.read, render)  # type: ignore[arg-type]
        requests, name = pending.requests, pending.requests[0].name
        skipped, read, hits = pending.skipped, pending.read, pending.hits
        if skipped is not None:
            if len(skipped) < len(requests):
                return self._render_partly(requests, render, skipped)
            uncached: list[str] = self._drive(
                render_uncached(self, requests), name, render
            )
            return uncached
        assert read is not None
        if hits is not None:
            if self.debug:
                for i in self._foreign(requests, read):
                    self._compare(requests[i], read, i, self._collect(render, i))
            return [
                filling.open_stored(self, r, stored, render, i)
                if holes.MARK in stored
                else stored
                for i, (r, stored) in enumerate(zip(requests, hits, strict=True))
            ]
        if won_alone(read):
            return render_won(self, requests[0], read, render)
        flow = miss_flow(self, requests, pending.wait, read, pending.found)
        results: list[str] = self._drive(flow, name, render)
        return results

    async def afinish(
        self, pending: Pending, render: Callable[[int], Awaitable[str]]
    ) -> list[str]:
        """Async :meth:`finish`."""
        requests, name = pending.requests, pending.requests[0].name
        skipped, read, hits = pending.skipped, pending.read, pending.hits
        if skipped is not None:
            if len(skipped) < len(requests):
                return await self._arender_partly(requests, render, skipped)
            flow = render_uncached(self, requests)
            uncached: list[str] = await self._adrive(flow, name, render)
            return uncached
        assert read is not None
        if hits is not None:
            if self.debug:
                for i in self._foreign(requests, read):
                    fresh = await self._acollect(render, i)
                    self._compare(requests[i], read, i, fresh)
            return [
                await filling.aopen_stored(self, r, stored, render, i)
                if holes.MARK in stored
                else stored
                for i, (r, stored) in enumerate(zip(requests, hits, strict=True))
            ]
        flow = miss_flow(self, requests, pending.wait, read, pending.found)
        results: list[str] = await self._adrive(flow, name, render)
        return results

    def _render_partly(
        self,
        requests: Sequence[FragmentRequest],
        render: Callable[[int], str],
        skipped: list[int],
    ) -> list[str]:
        """A collection some of whose items must not be cached."""
        results = [""] * len(requests)
        for indices in _parts(len(requests), skipped):
            bodies = self.render_many(
                [requests[i] for i in indices], _shifted(render, indices)
            )
            for i, body in zip(indices, bodies, strict=True):
                results[i] = body
        return results

    async def _arender_partly(
        self,
        requests: Sequence[FragmentRequest],
        render: Callable[[int], Awaitable[str]],
        skipped: list[int],
    ) -> list[str]:
        results = [""] * len(requests)
        for indices in _parts(len(requests), skipped):
            bodies = await self.render_many_async(
                [requests[i] for i in indices], _shifted(render, indices)
            )
            for i, body in zip(indices, bodies, strict=True):
                results[i] = body
        return results

    def _hits(
        self, requests: Sequence[FragmentRequest], read: Read, found: Any
    ) -> list[str] | None:
        """The stored bodies, if the first read found every entry fresh and
        done (their holes still to fill).

        Fills ``read.entries`` (:meth:`_first` has left out a cold plain
        miss, which needs only its counters: ``lookup.won_alone``);
        ``None`` sends the batch on to :meth:`finish`.
        """
        if found is FAILED:
            return None
        versions = read.versions
        read.entries = entries = check(self, requests, read, found)
        now = time.time()
        if read.claims is not None and any(read.claims):
            return None  # the backend claimed a render, or saw one claimed
        for entry in entries:
            # Nested counters not read yet need the flow's second round trip.
            if not (
                entry
                # entry.is_fresh(now), inlined: every fetched hit's path
                and (entry.soft_expiry is None or now < entry.soft_expiry)
                and entry.versions.keys() <= versions.keys()
            ):
                return None
        for entry in entries:
            report(entry.versions, entry.soft_expiry)  # type: ignore[union-attr]
        fetched = time.perf_counter() - read.start
        if len(entries) == 1:
            self.statistics.record_fetched(requests[0].name, fetched)
        else:
            self.statistics.record_fetch(requests[0].name, fetched, hits=len(entries))
        note("hit", requests[0].name, read.keys, fetched, 0.0)
        return [entry.body for entry in entries]  # type: ignore[union-attr]

    def report_skipped(self, requests: Sequence[FragmentRequest]) -> None:
        """Tell the enclosing fragment and the page that *requests* render
        without the cache (a tag's ``if`` was false)."""
        if requests:
            report_uncached(
                requests[0].name, counters_of(self.prefix, requests, self.shards)
            )

    # -- invalidation ----------------------------------------------------------

    def invalidate(
        self, name: str, *vary: object, again_after: float | None = None
    ) -> bool:
        """Clear one variant of fragment *name*, and every fragment nesting it.

        Like every ``invalidate*`` method it never raises for a backend
        error: it returns ``False``, logs the error, and keeps the
        invalidation in a queue that is replayed once the backend answers
        (see :mod:`jinja_fragcache.invalidation`).  With *again_after*, the
        invalidation is made once more that many seconds later, which
        clears what a request that read its data before this call stored.
        """
        key = self.key_for(name, *vary)
        done = self._bump([variant_version_key(key)], name, again_after)
        if done:
            self._drive(delete_flow(key), name)
        return done

    def invalidate_all(self, name: str, *, again_after: float | None = None) -> bool:
        """Clear every variant of fragment *name* in O(1): one counter bump
        (one per shard, on a cluster that spreads names)."""
        return self._bump(self._name_keys(name), name, again_after)

    def invalidate_tags(self, *tags: str, again_after: float | None = None) -> bool:
        """Clear every fragment tagged with any of *tags*: a bump per tag."""
        return self._bump(self._tag_keys(tags), "(tags)", again_after)

    async def ainvalidate(
        self, name: str, *vary: object, again_after: float | None = None
    ) -> bool:
        """Async :meth:`invalidate`."""
        key = self.key_for(name, *vary)
        done = await self._abump([variant_version_key(key)], name, again_after)
        if done:
            await self._adrive(delete_flow(key), name)
        return done

    async def ainvalidate_all(
        self, name: str, *, again_after: float | None = None
    ) -> bool:
        """Async :meth:`invalidate_all`."""
        return await self._abump(self._name_keys(name), name, again_after)

    async def ainvalidate_tags(
        self, *tags: str, again_after: float | None = None
    ) -> bool:
        """Async :meth:`invalidate_tags`."""
        return await self._abump(self._tag_keys(tags), "(tags)", again_after)

    def _bump(self, counters: list[str], name: str, again_after: float | None) -> bool:
        left = self._drive(bump_flow(counters, self.batched_incr), name)
        return self._settle_bumps(counters, left, again_after)

    async def _abump(
        self, counters: list[str], name: str, again_after: float | None
    ) -> bool:
        left = await self._adrive(bump_flow(counters, self.batched_incr), name)
        return self._settle_bumps(counters, left, again_after)

    def _settle_bumps(
        self, counters: list[str], left: list[str], again_after: float | None
    ) -> bool:
        """Queue what could not be bumped, and the bumps to make again later;
        true when every bump was made."""
        self._announce(counters, left)
        if again_after:
            self.pending.add_later(counters, again_after)
        if not left:
            return True
        self.statistics.record_lost_invalidation(len(left))
        logger.error(
            "fragment cache backend %s could not take %d invalidation(s) (%s); "
            "kept in this process and replayed once it answers",
            type(self.backend).__name__,
            len(left),
            ", ".join(left),
        )
        self.pending.add_failed(left)
        return False

    def _replay_sync(self, counters: list[str]) -> list[str]:
        left: list[str] = self._drive(
            bump_flow(counters, self.batched_incr), "(replay)"
        )
        self._announce(counters, left)
        return left

    async def _areplayed(self) -> bool:
        """:meth:`PendingBumps.replay` through the async driver."""
        counters = self.pending.take()
        if not counters:  # none, or all being made by another replay
            return not self.pending.has_failed
        left = counters
        try:
            flow = bump_flow(counters, self.batched_incr)
            left = await self._adrive(flow, "(replay)")
            self._announce(counters, left)
        finally:
            done = self.pending.settle(counters, left)
        return done

    def _announce(self, counters: list[str], left: list[str]) -> None:
        """Call ``on_invalidated`` with the counters that were bumped."""
        if self.on_invalidated is None:
            return
        bumped = [k for k in counters if k not in left] if left else counters
        if not bumped:
            return
        try:
            self.on_invalidated(bumped)
        except Exception:
            logger.exception("on_invalidated failed for %s", ", ".join(bumped))

    def stats(self) -> dict[str, dict[str, float | int | bool]]:
        """Per-fragment counters as plain data; see :class:`FragmentStats`."""
        return self.statistics.as_dict()

    def _name_keys(self, name: str) -> list[str]:
        return name_version_keys(name, prefix=self.prefix, shards=self.shards)

    def _tag_keys(self, tags: Sequence[str]) -> list[str]:
        return [tag_version_key(tag, prefix=self.prefix) for tag in tags]

    def _foreign(self, requests: Sequence[FragmentRequest], read: Read) -> list[int]:
        """The hits written by another template's block of the same name
        whose source differs: they may render different output (checked
        under debug only)."""
        return [
            i
            for i, (request, entry) in enumerate(
                zip(requests, read.entries, strict=True)
            )
            if entry is not None
            and request.template
            and entry.template
            and entry.template != request.template
            and entry.digest != request.digest
        ]

    def _compare(
        self, request: FragmentRequest, read: Read, index: int, fresh: Rendered
    ) -> None:
        entry = read.entries[index]
        assert entry is not None
        if filling.sealed(self, request, fresh) != entry.body:
            warnings.warn(
                f"fragment {request.name!r} in template "
                f"{request.template.removeprefix('django:')!r} is served the entry "
                f"that {entry.template.removeprefix('django:')!r} wrote, and the two "
                "blocks render different output: give them different names or "
                "vary values",
                FragmentCacheWarning,
                stacklevel=2,
            )
