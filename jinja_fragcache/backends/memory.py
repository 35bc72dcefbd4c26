"""The embedded default: an in-process LRU store."""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence

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
        #: key: (value, expiry, the bytes it counts against max_bytes)
        self._data: OrderedDict[str, tuple[bytes | Entry, float | None, int]] = (
            OrderedDict()
        )
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

    def _live(self, key: str, now: float) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires, _ = item
        if expires is not None and expires <= now:
            self._remove(key)
            return None
        self._data.move_to_end(key)
        # An entry kept as it is goes where the protocol says bytes: what
        # reads it, the fragment cache's lookup, takes it as it is.
        return value  # type: ignore[return-value]

    def _remove(self, key: str) -> None:
        self._bytes -= self._data.pop(key)[2]
        self.generation += 1

    def _store(
        self, key: str, value: bytes | Entry, timeout: Timeout, now: float
    ) -> None:
        data = self._data
        if key in data:
            self._bytes -= data.pop(key)[2]
        self.generation += 1  # once for all it changes, evictions included
        if isinstance(value, Entry):  # kept as it is: its body in memory
            size = len(key) + sys.getsizeof(value.body) + _HEADER
        else:
            size = len(key) + len(value)
        if size > self.max_bytes:
            return  # would evict everything and still not fit
        data[key] = (value, None if timeout is None else now + timeout, size)
        self._bytes += size
        if len(data) > self.max_entries or self._bytes > self.max_bytes:
            self._evict()

    def _evict(self) -> None:
        """Drop the least recently used items until both bounds hold."""
        data = self._data
        while len(data) > self.max_entries or self._bytes > self.max_bytes:
            self._bytes -= data.popitem(last=False)[1][2]

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = time.monotonic()
        with self._lock:
            return [self._live(key, now) for key in keys]

    def set(self, key: str, value: bytes, timeout: Timeout) -> None:
        with self._lock:
            self._store(key, bytes(value), timeout, time.monotonic())

    def set_many(self, mapping: Mapping[str, bytes], timeout: Timeout) -> None:
        now = time.monotonic()
        with self._lock:
            for key, value in mapping.items():
                self._store(key, bytes(value), timeout, now)

    def add(self, key: str, value: bytes, timeout: Timeout) -> bool:
        now = time.monotonic()
        with self._lock:
            if self._live(key, now) is not None:
                return False
            self._store(key, bytes(value), timeout, now)
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            if key in self._data:
                self._remove(key)

    def incr(self, key: str, delta: int = 1) -> int | None:
        now = time.monotonic()
        with self._lock:
            current = self._live(key, now)
            if current is None:
                return None
            result = int(current) + delta
            _, expires, _ = self._data[key]
            timeout = None if expires is None else max(expires - now, 0.0)
            self._store(key, str(result).encode("ascii"), timeout, now)
            return result

    def read_claiming(self, read: ClaimingRead) -> Claimed:
        """The lookup's first read, the missing counters created and the
        locks claimed, under one lock (see :class:`~.base.ClaimingRead`)."""
        now = time.monotonic()
        live, store = self._live, self._store
        token = b""
        data = self._data
        with self._lock:
            # A missing key is the commonest answer of a miss's read: told
            # by the dict alone, without a call.
            counters = [
                live(key, now) if key in data else None for key in read.counters
            ]
            if None in counters:  # the read's one value (see ClaimingRead)
                token = read.new_version()
                for i, key in enumerate(read.counters):
                    if counters[i] is None:
                        counters[i] = token
                        store(key, token, None, now)
            values = [live(key, now) if key in data else None for key in read.entries]
            nested: dict[str, bytes | None] = {}
            if values.count(None) == len(values):  # all cold: nothing to judge
                states = ["cold"] * len(values)
            else:
                states = self._judged(values, read.counters, counters, nested, now)
            claims = []
            for state, lock in zip(states, read.locks):  # noqa: B905 - one per entry
                if state == "fresh" or (state == "cold" and not read.claim_cold):
                    claims.append(UNCLAIMED)
                elif lock in data and live(lock, now) is not None:
                    claims.append(HELD)
                else:
                    token = token or read.new_version()
                    store(lock, token, read.lock_timeout, now)
                    claims.append(WON)
        return made(Claimed, ([*values, *counters], claims, nested, token))

    def _judged(
        self,
        values: list[bytes | None],
        keys: Sequence[str],
        counters: list[bytes | None],
        nested: dict[str, bytes | None],
        now: float,
    ) -> list[str]:
        """What :func:`~..entry.judge` makes of each entry; the counters it
        read besides the read's own go into *nested*.  Under the lock."""
        known = dict(zip(keys, counters))  # noqa: B905 - one value per key

        def current(key: str) -> bytes | None:
            if key not in known:
                known[key] = nested[key] = self._live(key, now)
            return known[key]

        wall = time.time()
        return [
            "cold" if value is None else judge(value, current, wall) for value in values
        ]

    def write_releasing(
        self,
        writes: Mapping[str, bytes | Entry],
        timeout: Timeout,
        locks: Sequence[str],
        token: bytes,
    ) -> None:
        """Store *writes* and delete each lock still held by *token*."""
        now = time.monotonic()
        data = self._data
        with self._lock:
            for key, value in writes.items():
                kept = value if isinstance(value, Entry) else bytes(value)
                self._store(key, kept, timeout, now)
            for lock in locks:
                held = data.get(lock)
                if held is not None and held[0] == token:
                    self._remove(lock)

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
