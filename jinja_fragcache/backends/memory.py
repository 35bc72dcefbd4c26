"""The embedded default: an in-process LRU store."""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence

from ..entry import Entry, judge
from .base import (
    HELD,
    UNCLAIMED,
    WON,
    Claimed,
    ClaimingRead,
    SyncBackendMixin,
    Timeout,
    made,
)


class MemoryBackend(SyncBackendMixin):
    """A thread-safe in-process store with TTLs and LRU eviction.

    It is bounded twice: by *max_entries* and by *max_bytes* (the sum of key
    and value lengths).  When either bound is passed, the least recently used
    entries go first.  Each process has its own copy, so invalidation in one
    process does not reach another: use :class:`RedisBackend` for that.

    :attr:`generation` counts every change to what it holds (a write, a
    delete, an eviction, an expiry, a clear): while it stays the same, a
    read would return what it returned before, so the fragment cache may
    answer a hit it has already checked without reading again
    (:mod:`jinja_fragcache.memo`).
    """

    def __init__(
        self, *, max_entries: int = 10_000, max_bytes: int = 64 * 1024 * 1024
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        #: key: (value, expiry on the monotonic clock, the bytes it counts
        #: against max_bytes)
        self._data: OrderedDict[str, tuple[bytes | Entry, float, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.generation = 0

    #: ``write_releasing`` keeps entries as the fragment cache made them,
    #: not encoded: this store belongs to one process, and nothing else
    #: reads it (see ``FragmentCache.keeps_entries``).
    keeps_entries = True

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    @property
    def bytes_used(self) -> int:
        """Bytes held by keys and values now."""
        return self._bytes

    # What it holds changes through _read (an expiry), _remove, and _put
    # then _changed: an operation puts what it stores, then moves the
    # generation and keeps the bounds once, however many keys it stored.

    def _read(self, keys: Iterable[str], now: float) -> list[bytes | None]:
        """The value of each key, ``None`` where it is missing.  An expired
        item is removed; a live one becomes the most recently used."""
        data = self._data
        found: list[bytes | None] = []
        for key in keys:
            if key not in data:  # a miss's commonest answer, told at once
                found.append(None)
            elif data[key][1] <= now:  # expired
                self._remove(key)
                found.append(None)
            else:
                data.move_to_end(key)
                # An entry kept as it is goes where the protocol says bytes:
                # what reads it, the fragment cache's lookup, takes it so.
                found.append(data[key][0])  # type: ignore[arg-type]
        return found

    def _remove(self, key: str) -> None:
        self._bytes -= self._data.pop(key)[2]
        self.generation += 1

    def _put(
        self, key: str, value: bytes | Entry, expires: float, size: int | None = None
    ) -> None:
        """Store *value* as the most recently used item until *expires* (on
        the monotonic clock).  It counts *size* bytes against max_bytes: by
        default its key's and value's lengths.  An operation that puts then
        calls :meth:`_changed`, once for all it puts."""
        data = self._data
        if key in data:
            self._bytes -= data.pop(key)[2]
        if size is None:
            size = len(key) + len(value)
        if size <= self.max_bytes:  # else it would evict all and still not fit
            data[key] = (value, expires, size)
            self._bytes += size

    def _changed(self) -> None:
        """Count a change, and drop the least recently used items until
        both bounds hold."""
        self.generation += 1
        data = self._data
        while len(data) > self.max_entries or self._bytes > self.max_bytes:
            self._bytes -= data.popitem(last=False)[1][2]

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = time.monotonic()
        with self._lock:
            return self._read(keys, now)

    def set(self, key: str, value: bytes, timeout: Timeout) -> None:
        self.set_many({key: value}, timeout)

    def set_many(self, mapping: Mapping[str, bytes], timeout: Timeout) -> None:
        expires = _expiry(timeout)
        with self._lock:
            for key, value in mapping.items():
                self._put(key, bytes(value), expires)
            self._changed()

    def add(self, key: str, value: bytes, timeout: Timeout) -> bool:
        expires = _expiry(timeout)
        with self._lock:
            if self._read([key], time.monotonic()) != [None]:
                return False
            self._put(key, bytes(value), expires)
            self._changed()
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            if key in self._data:
                self._remove(key)

    def incr(self, key: str, delta: int = 1) -> int | None:
        with self._lock:
            (current,) = self._read([key], time.monotonic())
            if current is None:
                return None
            result = int(current) + delta
            # It keeps its expiry.
            self._put(key, str(result).encode("ascii"), self._data[key][1])
            self._changed()
            return result

    def read_claiming(self, read: ClaimingRead) -> Claimed:
        """The lookup's first read, the missing counters created and the
        locks claimed, under one lock (see :class:`~.base.ClaimingRead`)."""
        now = time.monotonic()
        data, token = self._data, b""
        with self._lock:
            values = self._read([*read.entries, *read.counters], now)
            n = len(read.entries)
            for i, key in enumerate(read.counters, n):
                if values[i] is None:  # the read's one value (see ClaimingRead)
                    token = token or read.new_version()
                    values[i] = token
                    self._put(key, token, _NEVER)
            nested: dict[str, bytes | None] = {}
            if values[:n].count(None) == n:  # all cold: nothing to judge
                states = ["cold"] * n
            else:
                states = self._judged(values, read.counters, nested, now)
            claims = []
            for state, lock in zip(states, read.locks):  # noqa: B905 - one per entry
                if state == "fresh" or (state == "cold" and not read.claim_cold):
                    claims.append(UNCLAIMED)
                elif (held := data.get(lock)) is not None and held[1] > now:
                    claims.append(HELD)
                else:  # a lock that expired is replaced
                    token = token or read.new_version()
                    self._put(lock, token, now + read.lock_timeout)
                    claims.append(WON)
            if token:  # made only to be stored
                self._changed()
        return made(Claimed, (values, claims, nested, token))

    def _judged(
        self,
        values: list[bytes | None],
        keys: Sequence[str],
        nested: dict[str, bytes | None],
        now: float,
    ) -> list[str]:
        """What :func:`~..entry.judge` makes of each entry of *values*
        (the entries' values, then the counters'); the counters it read
        besides the read's own, *keys*, go into *nested*.  Under the lock."""
        n = len(values) - len(keys)
        known = dict(zip(keys, values[n:]))  # noqa: B905 - one value per key

        def current(key: str) -> bytes | None:
            if key not in known:
                (known[key],) = self._read([key], now)
                nested[key] = known[key]
            return known[key]

        wall = time.time()
        return [
            "cold" if value is None else judge(value, current, wall)
            for value in values[:n]
        ]

    def write_releasing(
        self,
        writes: Mapping[str, bytes | Entry],
        timeout: Timeout,
        locks: Sequence[str],
        token: bytes,
    ) -> None:
        """Store *writes* and delete each lock still held by *token*."""
        expires = _expiry(timeout)
        data = self._data
        with self._lock:
            changed = bool(writes)
            for key, value in writes.items():
                if isinstance(value, Entry):  # kept as it is: its body in memory
                    size = len(key) + sys.getsizeof(value.body) + _HEADER
                    self._put(key, value, expires, size)
                else:
                    self._put(key, bytes(value), expires)
            for lock in locks:
                held = data.get(lock)
                if held is not None and held[0] == token:
                    # Not _remove: the generation moves once, below.
                    self._bytes -= data.pop(lock)[2]
                    changed = True
            if changed:
                self._changed()

    async def aread_claiming(self, read: ClaimingRead) -> Claimed:
        return self.read_claiming(read)

    async def awrite_releasing(
        self,
        writes: Mapping[str, bytes | Entry],
        timeout: Timeout,
        locks: Sequence[str],
        token: bytes,
    ) -> None:
        self.write_releasing(writes, timeout, locks, token)

    def clear(self) -> None:
        """Drop everything (this store belongs to this process alone)."""
        with self._lock:
            self._data.clear()
            self._bytes = 0
            self.generation += 1


#: What an entry kept as it is counts besides its body: about its header.
_HEADER = 100

#: The expiry of an item stored without a timeout: no clock reaches it, so
#: an item's liveness is one comparison.
_NEVER = math.inf


def _expiry(timeout: Timeout) -> float:
    """When an item stored now for *timeout* seconds expires, on the
    monotonic clock."""
    return _NEVER if timeout is None else time.monotonic() + timeout
