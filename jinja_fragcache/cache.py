"""The one lookup/render path, shared by every tag, engine and helper.

:class:`FragmentCache` owns a backend and the rules of a lookup: versions,
digests, soft expiry with a stale grace, the re-render lock, fail-open and
statistics.  The rules are written once, as a generator that *yields* each
piece of I/O (a backend call, a render, a sleep) and is driven by a sync or
an async driver.  That is how ``render`` and ``render_async`` share every
line of logic without either one blocking the other's way of doing I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import itertools
import logging
import secrets
import time
import warnings
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

from . import holes
from .backends.base import Backend, request_errors
from .backends.memory import MemoryBackend
from .breaker import CircuitBreaker
from .entry import CorruptEntryError, Entry, OutdatedEntryError
from .identity import DEFAULT_IDENTITY, RefusedVaryValue, VaryIdentity
from .invalidation import PendingBumps
from .keys import (
    FragmentCacheWarning,
    check_prefix,
    key_of,
    lock_key,
    make_fragment_key,
    name_version_key,
    tag_version_key,
    variant_version_key,
)
from .stats import FragmentStats
from .timeouts import Timeout, check_timeout

logger = logging.getLogger("jinja_fragcache")

_T = TypeVar("_T")

#: What a backend call returns to the flow when the backend failed or the
#: circuit breaker is open.
_FAILED: Any = object()

#: Errors that come from a request's own arguments, whatever the backend.
_REQUEST_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, OverflowError)

#: The versions the fragments rendered so far inside an enclosing fragment
#: depend on; ``None`` outside any fragment.
_collector: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "jinja_fragcache_collector", default=None
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


def _note(
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


# An instruction from the flow to its driver: ("get_many", keys),
# ("add_many", mapping, timeout), ("set_many", mapping, timeout),
# ("delete", key), ("render", indices) or ("sleep", seconds).
_Op = tuple[Any, ...]
_Gen = Generator[_Op, Any, Any]


class _Rendered(NamedTuple):
    body: str
    versions: dict[str, str]
    seconds: float


class FragmentRequest(NamedTuple):
    """One variant of one fragment, as a tag asks for it.

    :param name: the fragment name.
    :param vary: the vary values, already as strings (see
        :func:`~jinja_fragcache.keys.vary_strings`).
    :param timeout: checked seconds; ``None`` never expires, ``0`` bypasses
        the cache.
    :param tags: invalidation tags.
    :param template: the template that holds the block.
    :param digest: the digest of the block's source (and what it includes).
    :param context: the template context the tag rendered in, for a
        ``store_filter``; not part of the key.
    """

    name: str
    vary: tuple[str, ...] = ()
    timeout: Timeout = None
    tags: tuple[str, ...] = ()
    template: str = ""
    digest: str = ""
    context: Any = None


def check_tags(tags: object) -> tuple[str, ...]:
    """``tags=`` as a tuple: ``None``, a string, or strings; else ``ValueError``."""
    if tags is None:
        return ()
    if isinstance(tags, str):
        return (tags,)
    if isinstance(tags, Iterable):
        found = tuple(tags)
        if all(isinstance(tag, str) for tag in found):
            return found
    raise ValueError(f"tags= must be a string or a list of strings, got {tags!r}")


def build_requests(
    name: str,
    varies: Iterable[Iterable[object]],
    *,
    timeout: object,
    tags: object = None,
    template: str = "",
    digest: str = "",
    context: Any = None,
    identity: VaryIdentity | None = None,
    where: str = "",
    debug: bool = False,
) -> list[FragmentRequest]:
    """One request per tuple of vary values, as every tag builds them.

    The timeout and the tags are checked once.  A variant with a vary value
    that has no safe identity (see :mod:`jinja_fragcache.identity`) renders
    uncached (its timeout becomes ``0``) with a warning naming *where*; with
    *debug* a value with no identity at all is an error instead.

    :raises ValueError: naming the bad value; the tag adds the template and
        the line.
    """
    seconds = check_timeout(timeout)
    tag_names = check_tags(tags)
    identity = identity or DEFAULT_IDENTITY
    requests = []
    for vary in varies:
        wanted = seconds
        try:
            strings = identity.strings(vary)
        except RefusedVaryValue as refused:
            if debug and refused.severe:
                raise
            warnings.warn(
                f"fragment {name!r} ({where or 'no template'}) is not cached: "
                f"{refused}",
                FragmentCacheWarning,
                stacklevel=2,
            )
            strings, wanted = (), 0.0
        requests.append(
            FragmentRequest(name, strings, wanted, tag_names, template, digest, context)
        )
    return requests


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


def _new_version() -> bytes:
    # Unpredictable, so a counter lost to eviction and created again can
    # never match the version an old entry recorded.
    return str(secrets.randbits(62)).encode("ascii")


def _texts(values: Sequence[bytes | None]) -> list[str | None]:
    # latin-1 decodes any bytes: a garbled counter is a mismatch, not a crash.
    return [None if v is None else v.decode("latin-1") for v in values]


def _keys_for(
    prefix: str, name: str, vary: tuple[str, ...], tags: tuple[str, ...]
) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """A variant's entry key, the keys of the counters it depends on, and
    both together: what a lookup of that variant alone reads."""
    if sum(map(len, vary)) > _CACHED_VARY_LENGTH:
        return _plan_keys(prefix, name, vary, tags)
    return _cached_plan(prefix, name, vary, tags)


#: Vary values longer than this (all together) are not kept in the cache
#: below, which would otherwise hold them without a bound on bytes.
_CACHED_VARY_LENGTH = 512


def _plan_keys(
    prefix: str, name: str, vary: tuple[str, ...], tags: tuple[str, ...]
) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    key = key_of(name, vary, prefix=prefix)
    counters = [variant_version_key(key), name_version_key(name, prefix=prefix)]
    counters += [tag_version_key(tag, prefix=prefix) for tag in dict.fromkeys(tags)]
    return key, tuple(counters), (key, *counters)


_cached_plan = functools.lru_cache(maxsize=8192)(_plan_keys)


class _DecodedEntries:
    """Recently decoded entries, keyed by their bytes, bounded in size."""

    def __init__(self, max_bytes: int = 8 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._entries: dict[bytes, Entry] = {}
        self._bytes = 0

    def get(self, data: bytes) -> Entry | None:
        return self._entries.get(data)

    def put(self, data: bytes, entry: Entry) -> None:
        if self._bytes + len(data) > self.max_bytes:
            # Dropping all at once keeps this O(1) and lock-free; the next
            # hits simply decode again.
            self._entries = {}
            self._bytes = 0
        self._entries[data] = entry
        self._bytes += len(data)


class _Read:
    """A batch's keys, and what its first read found."""

    __slots__ = ("keys", "own", "keys_read", "versions", "entries", "start")

    def __init__(self, requests: Sequence[FragmentRequest], prefix: str) -> None:
        #: Every entry, then every counter they depend on directly.
        self.keys_read: Sequence[str]
        if len(requests) == 1:  # the common case, kept cheap
            r = requests[0]
            key, counters, self.keys_read = _keys_for(prefix, r.name, r.vary, r.tags)
            self.keys, self.own = [key], [counters]
        else:
            plans = [_keys_for(prefix, r.name, r.vary, r.tags) for r in requests]
            self.keys = [key for key, _, _ in plans]
            self.own = [counters for _, counters, _ in plans]
            unique = dict.fromkeys(itertools.chain.from_iterable(self.own))
            self.keys_read = [*self.keys, *unique]
        self.versions: dict[str, str | None] = {}
        self.entries: list[Entry | None] = []
        self.start = time.perf_counter()


def _edited(entry: Entry, request: FragmentRequest) -> bool:
    """Whether *entry* was written by this very block before it was edited.

    Entries of another template (or of an unnamed one) are shared as usual.
    """
    return bool(request.template) and (
        entry.template == request.template and entry.digest != request.digest
    )


def _report(versions: dict[str, str]) -> None:
    """Tell the enclosing fragment, if any, what this one depends on."""
    collected = _collector.get()
    if collected is not None:
        collected.update(versions)


class FragmentCache:
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
    ) -> None:
        self.backend: Backend = MemoryBackend() if backend is None else backend
        self.prefix = check_prefix(prefix)
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
        self.statistics = FragmentStats()
        #: Invalidations still to make: see :mod:`jinja_fragcache.invalidation`.
        self.pending = PendingBumps(self._replay_sync, lambda: self.breaker.cooldown)
        # Entries are immutable bytes, so their decoded form can be kept:
        # a hit on the same bytes skips the parse.
        self._decoded = _DecodedEntries()

    def __repr__(self) -> str:
        return f"<FragmentCache {type(self.backend).__name__} prefix={self.prefix!r}>"

    # -- keys --------------------------------------------------------------

    def key_for(self, name: str, *vary: object) -> str:
        """The entry key of one variant: what ``cache_key_for`` shows."""
        return make_fragment_key(name, vary, prefix=self.prefix, identity=self.identity)

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
        name = requests[0].name
        skipped = _skipped(requests)
        if self.pending.has_failed and not self._replayed():
            skipped = list(range(len(requests)))  # unsafe to read: see _replayed
        if skipped:
            if len(skipped) < len(requests):
                return self._render_partly(requests, render, skipped)
            uncached: list[str] = self._drive(
                self._render_uncached(requests), name, render
            )
            return uncached
        # The hit path is plain code; only the rest enters the flow.
        read = _Read(requests, self.prefix)
        found = self._call(name, ("get_many", read.keys_read))
        hits = self._hits(requests, read, found)
        if hits is not None:
            return hits
        results: list[str] = self._drive(
            self._flow(requests, wait, read, found), name, render
        )
        return results

    async def render_many_async(
        self,
        requests: Sequence[FragmentRequest],
        render: Callable[[int], Awaitable[str]],
        *,
        wait: bool = False,
    ) -> list[str]:
        """Async :meth:`render_many`; *render* returns an awaitable."""
        name = requests[0].name
        skipped = _skipped(requests)
        if self.pending.has_failed and not await self._areplayed():
            skipped = list(range(len(requests)))
        if skipped:
            if len(skipped) < len(requests):
                return await self._arender_partly(requests, render, skipped)
            flow = self._render_uncached(requests)
            uncached: list[str] = await self._adrive(flow, name, render)
            return uncached
        read = _Read(requests, self.prefix)
        found = await self._acall(name, ("get_many", read.keys_read))
        hits = self._hits(requests, read, found)
        if hits is not None:
            return hits
        results: list[str] = await self._adrive(
            self._flow(requests, wait, read, found), name, render
        )
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
        self, requests: Sequence[FragmentRequest], read: _Read, found: Any
    ) -> list[str] | None:
        """The bodies, if the first read found every entry fresh and done.

        Fills ``read.entries``; ``None`` sends the batch to :meth:`_flow`.
        """
        if found is _FAILED:
            return None
        versions = read.versions
        read.entries = entries = self._check(requests, read, found)
        now = time.time()
        for entry in entries:
            # Nested counters not read yet need the flow's second round trip.
            if not (
                entry
                and entry.is_fresh(now)
                and entry.versions.keys() <= versions.keys()
            ):
                return None
        for entry in entries:
            _report(entry.versions)  # type: ignore[union-attr]
        fetched = time.perf_counter() - read.start
        self.statistics.record_fetch(requests[0].name, fetched, hits=len(entries))
        _note("hit", requests[0].name, read.keys, fetched, 0.0)
        return [
            self._opened(request, entry.body)  # type: ignore[union-attr]
            for request, entry in zip(requests, entries, strict=True)
        ]

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
        counters = [variant_version_key(key)]
        done = self._bumped(counters, self._drive(self._bump_flow(counters), name))
        if done:
            self._drive(self._delete_flow(key), name)
        return self._scheduled(counters, done, again_after)

    def invalidate_all(self, name: str, *, again_after: float | None = None) -> bool:
        """Clear every variant of fragment *name* in O(1): one counter bump."""
        counters = [self._name_key(name)]
        done = self._bumped(counters, self._drive(self._bump_flow(counters), name))
        return self._scheduled(counters, done, again_after)

    def invalidate_tags(self, *tags: str, again_after: float | None = None) -> bool:
        """Clear every fragment tagged with any of *tags*: a bump per tag."""
        counters = self._tag_keys(tags)
        flow = self._bump_flow(counters)
        done = self._bumped(counters, self._drive(flow, "(tags)"))
        return self._scheduled(counters, done, again_after)

    async def ainvalidate(
        self, name: str, *vary: object, again_after: float | None = None
    ) -> bool:
        """Async :meth:`invalidate`."""
        key = self.key_for(name, *vary)
        counters = [variant_version_key(key)]
        left = await self._adrive(self._bump_flow(counters), name)
        done = self._bumped(counters, left)
        if done:
            await self._adrive(self._delete_flow(key), name)
        return self._scheduled(counters, done, again_after)

    async def ainvalidate_all(
        self, name: str, *, again_after: float | None = None
    ) -> bool:
        """Async :meth:`invalidate_all`."""
        counters = [self._name_key(name)]
        left = await self._adrive(self._bump_flow(counters), name)
        return self._scheduled(counters, self._bumped(counters, left), again_after)

    async def ainvalidate_tags(
        self, *tags: str, again_after: float | None = None
    ) -> bool:
        """Async :meth:`invalidate_tags`."""
        counters = self._tag_keys(tags)
        left = await self._adrive(self._bump_flow(counters), "(tags)")
        done = self._bumped(counters, left)
        return self._scheduled(counters, done, again_after)

    def _bumped(self, counters: list[str], left: list[str]) -> bool:
        """Queue what could not be bumped; true when everything was."""
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

    def _scheduled(
        self, counters: list[str], done: bool, again_after: float | None
    ) -> bool:
        if again_after:
            self.pending.add_later(counters, again_after)
        return done

    def _replay_sync(self, counters: list[str]) -> list[str]:
        left: list[str] = self._drive(self._bump_flow(counters), "(replay)")
        return left

    def _replayed(self) -> bool:
        """Make the queued invalidations before a read; false if they still
        cannot be made (the read must not happen: it could find what they
        clear)."""
        counters = self.pending.failed_counters()
        return not counters or self.pending.settle(
            counters, self._replay_sync(counters)
        )

    async def _areplayed(self) -> bool:
        counters = self.pending.failed_counters()
        if not counters:
            return True
        left = await self._adrive(self._bump_flow(counters), "(replay)")
        return self.pending.settle(counters, left)

    def stats(self) -> dict[str, dict[str, float | int | bool]]:
        """Per-fragment counters as plain data; see :class:`FragmentStats`."""
        return self.statistics.as_dict()

    def _name_key(self, name: str) -> str:
        return name_version_key(name, prefix=self.prefix)

    def _tag_keys(self, tags: Sequence[str]) -> list[str]:
        return [tag_version_key(tag, prefix=self.prefix) for tag in tags]

    def _delete_flow(self, key: str) -> _Gen:
        yield ("delete", key)

    def _bump_flow(self, counters: Sequence[str]) -> _Gen:
        """Bump each counter; return those that could not be bumped."""
        for index, counter in enumerate(counters):
            bumped = yield ("incr", counter, 1)
            if bumped is None:
                # Never create a counter at a predictable value: a fresh
                # random one invalidates just as well.
                created = yield ("add", counter, _new_version(), None)
                if created is False:  # created meanwhile by someone else
                    bumped = yield ("incr", counter, 1)
                else:
                    bumped = created
            if bumped is _FAILED:
                return list(counters[index:])
        return []

    # -- drivers: carry out what a flow yields -----------------------------------

    def _drive(
        self, flow: _Gen, name: str, render: Callable[[int], str] | None = None
    ) -> Any:
        op = next(flow)
        while True:
            kind = op[0]
            try:
                if kind == "render":
                    assert render is not None
                    result: Any = [self._collect(render, i) for i in op[1]]
                elif kind == "sleep":
                    time.sleep(op[1])
                    result = None
                else:
                    result = self._call(name, op)
            except BaseException as exc:
                op = flow.throw(exc)  # lets the flow clean up, then re-raises
                continue
            try:
                op = flow.send(result)
            except StopIteration as stop:
                return stop.value

    async def _adrive(
        self,
        flow: _Gen,
        name: str,
        render: Callable[[int], Awaitable[str]] | None = None,
    ) -> Any:
        op = next(flow)
        while True:
            kind = op[0]
            try:
                if kind == "render":
                    assert render is not None
                    result: Any = [await self._acollect(render, i) for i in op[1]]
                elif kind == "sleep":
                    await asyncio.sleep(op[1])
                    result = None
                else:
                    result = await self._acall(name, op)
            except BaseException as exc:
                op = flow.throw(exc)
                continue
            try:
                op = flow.send(result)
            except StopIteration as stop:
                return stop.value

    def _collect(self, render: Callable[[int], str], index: int) -> _Rendered:
        collected: dict[str, str] = {}
        token = _collector.set(collected)
        start = time.perf_counter()
        try:
            body = str(render(index))
        finally:
            _collector.reset(token)
        return _Rendered(body, collected, time.perf_counter() - start)

    async def _acollect(
        self, render: Callable[[int], Awaitable[str]], index: int
    ) -> _Rendered:
        collected: dict[str, str] = {}
        token = _collector.set(collected)
        start = time.perf_counter()
        try:
            body = str(await render(index))
        finally:
            _collector.reset(token)
        return _Rendered(body, collected, time.perf_counter() - start)

    # -- backend calls: fail open behind a circuit breaker -------------------

    def _call(self, name: str, op: _Op) -> Any:
        if not self.breaker.allow():
            return _FAILED
        try:
            result = getattr(self.backend, op[0])(*op[1:])
        except Exception as exc:
            if not self.fail_open:
                self.statistics.record_error(name)
                raise
            self._failed(name, op, exc)
            return _FAILED
        self.breaker.succeeded()
        return result

    async def _acall(self, name: str, op: _Op) -> Any:
        if not self.breaker.allow():
            return _FAILED
        try:
            result = await getattr(self.backend, "a" + op[0])(*op[1:])
        except Exception as exc:
            if not self.fail_open:
                self.statistics.record_error(name)
                raise
            self._failed(name, op, exc)
            return _FAILED
        self.breaker.succeeded()
        return result

    def _failed(self, name: str, op: _Op, exc: Exception) -> None:
        self.statistics.record_error(name)
        refused = _REQUEST_ERRORS + request_errors(self.backend)
        # django-redis wraps the client's error: its cause tells.
        if isinstance(exc, refused) or isinstance(exc.__cause__, refused):
            # The server answered, and refused this request's arguments (a
            # value too large, say): this request's error, not an outage,
            # so the breaker stays closed for every other fragment.
            logger.error(
                "fragment cache backend %s refused %s for fragment %r: %s",
                type(self.backend).__name__,
                op[0],
                name,
                exc,
            )
            return
        self.breaker.failed()
        logger.exception(
            "fragment cache backend %s failed in %s for fragment %r; rendering "
            "uncached for the next %.1f s",
            type(self.backend).__name__,
            op[0],
            name,
            self.breaker.cooldown,
        )

    # -- the rules -----------------------------------------------------------

    def _flow(
        self, requests: Sequence[FragmentRequest], wait: bool, read: _Read, found: Any
    ) -> _Gen:
        """Everything but the plain hit: nested checks, stale serving, the
        lock, waiting, rendering and writing back."""
        if found is _FAILED:
            return (yield from self._render_uncached(requests))
        first = requests[0]
        keys, own, versions, start = read.keys, read.own, read.versions, read.start
        entries = yield from self._settle(read.entries, versions)
        if entries is _FAILED:
            return (yield from self._render_uncached(requests))

        now = time.time()
        results: list[str | None] = [None] * len(requests)
        stale = [i for i, e in enumerate(entries) if e and not e.is_fresh(now)]
        cold = [i for i, e in enumerate(entries) if e is None]
        writable = True
        won: list[int] = []
        contested = stale + cold if wait else stale
        token = _new_version()
        if contested:
            claimed = yield (
                "add_many",
                {lock_key(keys[i]): token for i in contested},
                self.lock_timeout,
            )
            if claimed is _FAILED:
                writable = False
            else:
                won = [i for i, ok in zip(contested, claimed, strict=True) if ok]

        waiting = [i for i in cold if wait and writable and i not in won]
        deadline = time.monotonic() + self.lock_wait
        while waiting and time.monotonic() < deadline:
            yield ("sleep", self.poll_interval)
            again = _Read([requests[i] for i in waiting], self.prefix)
            again.versions = versions
            arrivals = yield from self._lookup([requests[i] for i in waiting], again)
            if arrivals is _FAILED:
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
                taken = yield from self._take_over(keys, waiting, token)
                if taken is _FAILED:
                    writable = False
                    break
                won += taken
                waiting = [i for i in waiting if i not in taken]

        to_render = [i for i, e in enumerate(entries) if e is None or i in won]
        served_stale = 0
        for i, usable in enumerate(entries):
            if usable is not None and i not in won:
                results[i] = self._opened(requests[i], usable.body)
                served_stale += not usable.is_fresh(now)
                _report(usable.versions)
        fetched = time.perf_counter() - start
        self.statistics.record_fetch(
            first.name,
            fetched,
            hits=len(requests) - len(to_render) - served_stale,
            misses=len(to_render),
            stale=served_stale,
        )
        if not to_render:
            _note("stale" if served_stale else "hit", first.name, keys, fetched, 0.0)
            return results

        # Snapshot every version before rendering, creating the missing
        # counters, so an invalidation during the render makes this entry
        # invalid instead of being lost.
        needed = dict.fromkeys(k for i in to_render for k in own[i])
        missing = {k: _new_version() for k in needed if versions.get(k) is None}
        if missing and writable:
            created = yield ("add_many", missing, None)
            if created is _FAILED:
                writable = False
            else:
                lost = [k for k, ok in zip(missing, created, strict=True) if not ok]
                versions.update((k, v.decode("latin-1")) for k, v in missing.items())
                if lost:
                    current = yield ("get_many", lost)
                    if current is _FAILED:
                        writable = False
                    else:
                        versions.update(zip(lost, _texts(current), strict=True))

        try:
            rendered = yield ("render", to_render)
        except BaseException:  # let the next request render instead of waiting
            yield from self._unlock(keys, won)
            raise
        self._record_renders(first.name, rendered)
        timeout = first.timeout
        soft_expiry = None if timeout is None else time.time() + timeout
        writes: dict[str, bytes] = {}
        try:
            for i, (body, nested, _) in zip(to_render, rendered, strict=True):
                results[i] = body
                snapshot = {k: versions.get(k) or "" for k in own[i]}
                snapshot.update(nested)
                _report(snapshot)
                stored = self._sealed(requests[i], body)
                if self.store_filter is None or self.store_filter(requests[i], stored):
                    entry = Entry(
                        stored, soft_expiry, first.template, first.digest, snapshot
                    )
                    writes[keys[i]] = entry.encode()
        except BaseException:  # a store_filter that refuses loudly
            yield from self._unlock(keys, won)
            raise
        if writable and writes:
            hard_ttl = None if timeout is None else timeout + self.stale_grace
            yield ("set_many", writes, hard_ttl)
        # Whatever failed before, a lock this request holds is released, or
        # every later request would wait for it (the breaker skips this
        # when the backend itself is down).
        yield from self._unlock(keys, won)
        # Noted after the render, whose own fragments note theirs first.
        _note("miss", first.name, keys, fetched, sum(r.seconds for r in rendered))
        return results

    def _take_over(self, keys: list[str], waiting: list[int], token: bytes) -> _Gen:
        """Claim the locks of *waiting* whose holders released them."""
        locks = [lock_key(keys[i]) for i in waiting]
        held = yield ("get_many", locks)
        if held is _FAILED:
            return _FAILED
        free = [i for i, value in zip(waiting, held, strict=True) if value is None]
        if not free:
            return []
        claimed = yield (
            "add_many",
            {lock_key(keys[i]): token for i in free},
            self.lock_timeout,
        )
        if claimed is _FAILED:
            return _FAILED
        return [i for i, ok in zip(free, claimed, strict=True) if ok]

    def _unlock(self, keys: list[str], won: list[int]) -> _Gen:
        for i in won:
            yield ("delete", lock_key(keys[i]))

    def _lookup(self, requests: Sequence[FragmentRequest], read: _Read) -> _Gen:
        """Read entries and their versions again; keep the usable entries."""
        found = yield ("get_many", read.keys_read)
        if found is _FAILED:
            return _FAILED
        entries = self._check(requests, read, found)
        return (yield from self._settle(entries, read.versions))

    def _check(
        self,
        requests: Sequence[FragmentRequest],
        read: _Read,
        found: list[bytes | None],
    ) -> list[Entry | None]:
        """Decode what one read found; keep entries whose own counters match.

        Fills ``read.versions`` with the counters read.
        """
        versions = read.versions
        count = len(read.keys)
        versions.update(zip(read.keys_read[count:], _texts(found[count:]), strict=True))
        entries: list[Entry | None] = []
        for request, key, data, own_keys in zip(
            requests,
            read.keys,
            found,
            read.own,
            strict=False,  # found: counters too
        ):
            entry = self._decode(request.name, key, data)
            if entry is not None:
                recorded = entry.versions
                for k in own_keys:
                    current = versions[k]
                    if current is None or recorded.get(k) != current:
                        entry = None
                        break
                else:
                    if _edited(entry, request):
                        entry = None
            entries.append(entry)
        return entries

    def _settle(
        self, entries: list[Entry | None], versions: dict[str, str | None]
    ) -> _Gen:
        """Check the counters of nested fragments: one round trip at most,
        however deep the nesting, since entries record them flattened."""
        nested = {k for e in entries if e for k in e.versions if k not in versions}
        if not nested:
            return entries
        nested_keys = list(nested)
        found = yield ("get_many", nested_keys)
        if found is _FAILED:
            return _FAILED
        versions.update(zip(nested_keys, _texts(found), strict=True))
        return [
            e if e and all(versions[k] == v for k, v in e.versions.items()) else None
            for e in entries
        ]

    def _sealed(self, request: FragmentRequest, body: str) -> str:
        """The stored form of a rendered body: escaped, and its per-request
        values made holes (see :mod:`jinja_fragcache.holes`)."""
        stored = holes.escape(body)
        return stored if self.holes is None else self.holes.punch(request, stored)

    def _opened(self, request: FragmentRequest, stored: str) -> str:
        """The output of a stored body for *request*: its holes filled."""
        filler = self.holes
        if filler is None:
            return holes.fill(stored, lambda name: "")
        return holes.fill(stored, lambda name: filler.fill(request, name))

    def _decode(self, name: str, key: str, data: bytes | None) -> Entry | None:
        if data is None:
            return None
        entry = self._decoded.get(data)
        if entry is None:
            try:
                entry = Entry.decode(data)
            except OutdatedEntryError:  # an older release wrote it: a miss
                return None
            except CorruptEntryError as exc:
                self.statistics.record_error(name)
                logger.warning(
                    "ignoring unreadable entry %s of fragment %r: %s", key, name, exc
                )
                return None
            self._decoded.put(data, entry)
        return entry

    def _render_uncached(self, requests: Sequence[FragmentRequest]) -> _Gen:
        rendered = yield ("render", range(len(requests)))
        self._record_renders(requests[0].name, rendered)
        seconds = sum(r.seconds for r in rendered)
        _note("uncached", requests[0].name, [], 0.0, seconds)
        return [r.body for r in rendered]

    def _record_renders(self, name: str, rendered: list[_Rendered]) -> None:
        seconds = sum(r.seconds for r in rendered)
        self.statistics.record_render(name, seconds, len(rendered))
