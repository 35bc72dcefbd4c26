"""Reading entries: the keys a batch reads, decoding what came back, and
keeping only the entries whose versions still match.

The plain hit (one read, every entry fresh) is
:meth:`~jinja_fragcache.cache.FragmentCache._hits`; what it cannot answer
goes on to :mod:`.miss`.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .backends.base import WON, Claimed, ClaimingRead, made
from .entry import CorruptEntryError, Entry, OutdatedEntryError
from .flow import FAILED, Gen, Op, new_version
from .keys import variant_plan
from .memo import ByteBounded

if TYPE_CHECKING:
    from .cache import FragmentCache
    from .requests import FragmentRequest

logger = logging.getLogger("jinja_fragcache")


_COUNTER_RE = re.compile(rb"-?[0-9]{1,20}\Z")
#: Counters joined by spaces, every one a counter.
_COUNTERS_RE = re.compile(rb"-?[0-9]{1,20}(?: -?[0-9]{1,20})*")


def texts(values: Sequence[bytes | None]) -> list[str | None]:
    """Version counters as text.  A value that is not a counter (another
    program wrote there, a restore went wrong) reads as missing: entries
    that depend on it are misses, and the miss protocol replaces it."""
    if None not in values:  # the common case, checked at once, all in C
        joined = b" ".join(values)  # type: ignore[arg-type]
        if _COUNTERS_RE.fullmatch(joined):
            found: list[str | None] = joined.decode("ascii").split(" ")  # type: ignore[assignment]
            if len(found) == len(values):  # no value held a space
                return found
    return [
        v.decode("ascii") if v is not None and _COUNTER_RE.match(v) else None
        for v in values
    ]


#: A variant's keys: see :func:`~jinja_fragcache.keys.variant_plan`.
_keys_for = variant_plan


def counters_of(
    prefix: str, requests: Sequence[FragmentRequest], shards: int = 1
) -> list[str]:
    """The version counters *requests* depend on directly."""
    return [
        k
        for r in requests
        for k in _keys_for(prefix, r.name, r.vary, r.tags, shards)[1]
    ]


class DecodedEntries(ByteBounded[str, tuple[bytes, Entry]]):
    """The last entry decoded under each key, with its bytes: a read that
    finds the same bytes there again reuses it.  Keyed by the key, not the
    bytes: hashing an entry's bytes (kilobytes, fresh from the server on
    every read) would cost more than comparing them."""


class Read:
    """A batch's keys, and what its first read found."""

    __slots__ = (
        "keys",
        "locks",
        "own",
        "keys_read",
        "counters",
        "versions",
        "entries",
        "start",
        "claims",
        "token",
    )

    def __init__(
        self, requests: Sequence[FragmentRequest], prefix: str, shards: int = 1
    ) -> None:
        #: Every entry, then every counter they depend on directly, each
        #: once: the :attr:`counters`.
        self.keys_read: Sequence[str]
        self.counters: Sequence[str]
        if len(requests) == 1:  # the common case, kept cheap
            r = requests[0]
            plan = _keys_for(prefix, r.name, r.vary, r.tags, shards)
            key, self.counters, self.keys_read, lock = plan
            self.keys, self.own, self.locks = [key], [self.counters], [lock]
        else:
            plans = [
                _keys_for(prefix, r.name, r.vary, r.tags, shards) for r in requests
            ]
            self.keys = [plan[0] for plan in plans]
            self.own = [plan[1] for plan in plans]
            #: Each entry's re-render lock.
            self.locks = [plan[3] for plan in plans]
            unique = dict.fromkeys(itertools.chain.from_iterable(self.own))
            self.counters = [*unique]
            self.keys_read = [*self.keys, *self.counters]
        self.versions: dict[str, str | None] = {}
        self.entries: list[Entry | None] = []
        self.start = time.perf_counter()
        #: What a claiming first read claimed, per entry (see
        #: :class:`~.backends.base.Claimed`), with the claims' token.
        self.claims: list[int] | None = None
        self.token = b""


def first_read(cache: FragmentCache, read: Read, wait: bool) -> Op:
    """The first read of a lookup.  A backend that can claims in it, too,
    the locks of the entries it finds in need of a render, and creates
    the missing counters: a miss then costs this trip and the write."""
    if not cache.compound:
        return ("get_many", read.keys_read)
    claiming = (
        read.keys,
        read.locks,
        read.counters,
        wait,
        cache.lock_timeout,
        new_version,
    )
    return ("read_claiming", made(ClaimingRead, claiming))


def took(read: Read, found: Any) -> Any:
    """What the first read found, as ``get_many`` would have returned it;
    the claims and nested counters of a claiming read go into *read*."""
    if type(found) is not Claimed:
        return found
    if found.token:
        read.claims, read.token = found.claims, found.token
    if found.nested:
        nested = found.nested
        read.versions.update(zip(nested, texts(list(nested.values())), strict=True))
    return found.values


#: The claims of a plain miss: one request, its lock won.
_WON_ONE = [WON]

#: ``Pending.found`` of a cold plain miss, which :func:`cold_won`
#: recognised from the first read: the finish need not ask again.
COLD_WON: Any = object()


def cold_won(read: Read, found: Any) -> bool:
    """Whether a claiming first read left a cold plain miss: one request,
    no entry (nothing to judge: it renders), its lock won, every counter it
    depends on read or created.  The commonest miss, told before anything
    else is made of the read: only its counters go into ``read.versions``,
    and its claim and token into *read*."""
    if type(found) is not Claimed or found.claims != _WON_ONE:
        return False
    values = found.values
    if values[0] is not None:  # stale, or unreadable: check() tells
        return False
    versions = texts(values[1:])
    if None in versions:
        return False
    read.claims, read.token = _WON_ONE, found.token
    read.versions.update(zip(read.counters, versions))  # noqa: B905 - same length
    return True


def won_alone(read: Read) -> bool:
    """Whether the reads left a plain miss: one request whose lock its
    first read won, every counter the request depends on read or
    created."""
    if read.claims != _WON_ONE:
        return False
    return None not in map(read.versions.get, read.own[0])


class Pending(NamedTuple):
    """What :meth:`~jinja_fragcache.cache.FragmentCache.lookup` could not
    answer without a render, for ``finish`` to take on."""

    requests: Sequence[FragmentRequest]
    wait: bool
    #: The requests that bypass the cache, when any do (nothing was read).
    skipped: list[int] | None = None
    read: Read | None = None
    found: Any = None
    #: The stored bodies when every entry was a fresh hit (holes to fill).
    hits: list[str] | None = None


def _edited(entry: Entry, request: FragmentRequest) -> bool:
    """Whether *entry* was written by this very block before it was edited.

    Entries of another template (or of an unnamed one) are shared as usual.
    """
    return bool(request.template) and (
        entry.template == request.template and entry.digest != request.digest
    )


def lookup(
    cache: FragmentCache, requests: Sequence[FragmentRequest], read: Read
) -> Gen:
    """Read entries and their versions again; keep the usable entries."""
    found = yield ("get_many", read.keys_read)
    if found is FAILED:
        return FAILED
    entries = check(cache, requests, read, found)
    return (yield from settle(cache, entries, read.versions))


def check(
    cache: FragmentCache,
    requests: Sequence[FragmentRequest],
    read: Read,
    found: list[bytes | None],
) -> list[Entry | None]:
    """Decode what one read found; keep entries whose own counters match.

    Fills ``read.versions`` with the counters read.
    """
    versions = read.versions
    count = len(read.keys)
    # Plain zip()s, of lengths that match by construction: a keyword makes
    # zip() cost 1,500 instructions more, on every lookup.
    counters = zip(read.counters, texts(found[count:]))  # noqa: B905
    versions.update(counters)
    entries: list[Entry | None] = []
    # found: the counters follow the entries.
    for request, key, data, own_keys in zip(requests, read.keys, found, read.own):  # noqa: B905
        entry = decode(cache, request.name, key, data)
        # Kept if it recorded each of its own counters as it is now (none
        # missing: a pair with None matches nothing), compared in C, and
        # this very block did not write it before an edit.
        if entry is not None and not (
            dict(zip(own_keys, map(versions.get, own_keys))).items()  # noqa: B905
            <= entry.versions.items()
            and not _edited(entry, request)
        ):
            entry = None
        entries.append(entry)
    return entries


def settle(
    cache: FragmentCache, entries: list[Entry | None], versions: dict[str, str | None]
) -> Gen:
    """Check the counters of nested fragments: one round trip at most,
    however deep the nesting, since entries record them flattened."""
    nested = {k for e in entries if e for k in e.versions if k not in versions}
    if not nested:
        return entries
    nested_keys = list(nested)
    found = yield ("get_many", nested_keys)
    if found is FAILED:
        return FAILED
    versions.update(zip(nested_keys, texts(found), strict=True))
    return [
        e if e and all(versions[k] == v for k, v in e.versions.items()) else None
        for e in entries
    ]


def decode(
    cache: FragmentCache, name: str, key: str, data: bytes | Entry | None
) -> Entry | None:
    if data is None:
        return None
    if isinstance(data, Entry):  # kept as it is (FragmentCache.keeps_entries)
        return data
    known = cache._decoded.get(key)
    entry = known[1] if known is not None and known[0] == data else None
    if entry is None:
        try:
            entry = Entry.decode(data)
        except OutdatedEntryError:  # an older release wrote it: a miss
            return None
        except CorruptEntryError as exc:
            cache.statistics.record_error(name)
            logger.warning(
                "ignoring unreadable entry %s of fragment %r: %s", key, name, exc
            )
            return None
        cache._decoded.put(key, (data, entry), len(data))
    return entry
