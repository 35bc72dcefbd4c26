"""A per-process near cache in front of Redis, kept coherent by the server.

A hit whose keys this process already holds costs no round trip: the raw
values that ``get_many`` read (and what this process wrote) are kept here,
bounded in bytes, least recently used first out, and Redis tells the process
when any of them changes, through server-assisted client-side caching
(``CLIENT TRACKING``, Redis 6 or later).

**Tracking.**  One dedicated connection per process, in RESP2: it asks
``CLIENT ID``, tracking is turned on for it (``CLIENT TRACKING on REDIRECT
<its id> BCAST PREFIX <prefix>:`` for every key prefix bound), then it
subscribes to ``__redis__:invalidate``.  A daemon thread reads the messages
and drops the keys they name (a ``None`` payload drops everything).  Who
turns tracking on: given a way to make lookup connections (``register``,
as :class:`~jinja_fragcache.RedisBackend` gives), one of them, with
``NOLOOP``, so that the server sends no message for what that connection
writes (see :meth:`NearCache.lend`); otherwise the tracking connection
itself (see :mod:`jinja_fragcache.tracking`).  RESP2 rather than
RESP3 pushes: a subscribed connection is the documented pattern for every
Redis 6+, it needs nothing of redis-py's push handling (whose built-in
client-side cache needs Redis 7.4), and the main clients keep whatever
protocol they use.  BCAST rather than the default mode: the server then
remembers nothing per key, a key created later (a negative entry) is
covered, and so is every write by anyone: other processes, ``redis-cli``,
expiry and eviction (each sends an invalidation; checked by
``tests/test_near_cache.py``).

**Expiry.**  Redis sends the invalidation of an expired key only when it
reclaims it, which with many keys can be many seconds late (measured: over
10 s with 200,000 keys holding a TTL).  So a read that misses the near cache
asks the server for each key's value *and* its ``PTTL`` in the same single
command (a small Lua script, still one round trip), and a value is never
served here past its server-side expiry.  A write keeps the TTL it gave.

**Consistency.**  A value this near cache returns was the server's value at
most one invalidation-push delay ago: every write to a tracked key, by
anyone, reaches this process as an invalidation message sent by the server
right after the write and before it replies to the writer.  Before answering
from memory, a read checks (``poll(2)``, no round trip) for such messages
waiting unread, and applies them itself; if the tracking thread is applying
some at that moment, or one has arrived only in part, the read goes to the
server.
A read whose reply raced an invalidation of the same key is not kept.  Writes
made through this process (``set``, ``add``, ``delete``, ``incr`` and their
batches, sync or async) drop the local copy before they return, so this
process sees its own invalidations on its very next read.  Writes made on
the registered connection, of which no message comes, are applied here by
the lookup that made them, as their message would have them be (reads of
the same keys in flight keep nothing).  While the tracking connection or
the registered one is not established (not yet, lost, a server restart, a
failover), the near cache is empty and bypassed, every read goes to the
server; it is used again only once tracking is back on fresh connections,
after being emptied.  A server that refuses ``CLIENT TRACKING`` gets one
warning and no near cache.  A forked child starts empty with connections
of its own.

Writes are kept too (not ``incr``: Lua hands back a counter past 2**53
rounded).  Redis echoes a write to a tracked key back as an invalidation,
this process's own included, unless it was made on the registered
connection: a sync miss's counter and entry, written there, stay here
until someone else changes them; a written value echoed back lives here
only until its echo.
"""

from __future__ import annotations

import logging
import math
import os
import select
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from .tracking import Registered, Tracker, TrackingConnection

__all__ = ["DEFAULT_MAX_BYTES", "NearCache", "Registered", "TrackingConnection"]

logger = logging.getLogger("jinja_fragcache")

#: The default bound of a near cache: 32 MiB of keys and values.
DEFAULT_MAX_BYTES = 32 * 1024 * 1024

#: Bytes counted for each entry on top of its key and value: the tuple,
#: the dictionary slot and the string headers, roughly.
ENTRY_OVERHEAD = 120

#: One entry: the value (``None``: known missing) and when it expires
#: (``time.monotonic()`` seconds, ``math.inf`` for never).
_Entry = tuple[bytes | None, float]


class Plan:
    """What a read found locally, and what it must still ask the server."""

    __slots__ = ("values", "missing", "epoch", "started")

    def __init__(
        self,
        values: list[bytes | None] | None,
        missing: list[int],
        epoch: int,
        started: float,
    ) -> None:
        #: The values, local ones filled in; ``None`` means bypass entirely.
        self.values = values
        #: Indices still to read from the server.
        self.missing = missing
        self.epoch = epoch
        self.started = started


class WriteToken:
    """A write in flight: its keys, and the tracking session it began in."""

    __slots__ = ("keys", "epoch", "started")

    def __init__(self, keys: list[str], epoch: int, started: float) -> None:
        self.keys = keys
        self.epoch = epoch
        self.started = started


#: The token of a write of no tracked key.
_NO_KEYS = WriteToken([], 0, 0.0)

_live: weakref.WeakSet[NearCache] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for near in list(_live):
        near._forked()


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


class NearCache:
    """Raw values of tracked keys, bounded by bytes, kept coherent by Redis.

    :param connect: makes a new, unconnected tracking connection (RESP2).
    :param register: makes a new, unconnected lookup connection, to
        register the tracking on with ``NOLOOP`` and lend to lookups
        (:meth:`lend`); without it the tracking connection registers itself
        (see :mod:`jinja_fragcache.tracking`).
    :param max_bytes: the bound of keys plus values plus a fixed overhead
        per entry (:data:`ENTRY_OVERHEAD`).
    :param prefixes: key prefixes to track; more with :meth:`bind_prefix`.
        Keys under no bound prefix are never kept.

    Statistics (attributes, per process): ``hits`` (keys answered from
    memory), ``misses`` (keys read from the server through the near cache),
    ``bypassed`` (reads that went to the server whole, tracking being down
    or an invalidation pending), ``invalidations`` (keys dropped by the
    server's messages), ``flushes`` and ``sessions`` (tracking connections
    established).
    """

    def __init__(
        self,
        connect: Callable[[], TrackingConnection],
        *,
        register: Callable[[], Any] | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        prefixes: Iterable[str] = (),
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be > 0")
        self.max_bytes = max_bytes
        self._connect = connect
        self._register = register
        self._prefixes: tuple[str, ...] = ()
        self._init_state()
        for prefix in prefixes:
            self.bind_prefix(prefix)
        _live.add(self)

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._data: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        # Keys being read or written, and those of them invalidated
        # meanwhile: such a reply may predate the write and is not kept.
        self._inflight: dict[str, int] = {}
        self._dirty: set[str] = set()
        #: Bumped whenever everything is dropped; a reply from an older
        #: epoch is not kept.
        self._epoch = 0
        self._active = False
        self._processing = False
        #: The messages read end inside one: an invalidation still arriving.
        self._partial = False
        self._poll: Any = None
        #: The session's registered connection, when a lookup connection
        #: registered the tracking (NOLOOP).
        self._registered: Registered | None = None
        #: What the tracker names the active session by.
        self._session: object = None
        self._tracker: Tracker | None = None
        self.refused = False
        #: Counts every change to what the store would answer, and every
        #: read that went past it (see :attr:`generation`).
        self._changes = 0
        self.hits = self.misses = self.bypassed = 0
        self.invalidations = self.flushes = self.sessions = 0

    def __repr__(self) -> str:
        return (
            f"<NearCache {len(self._data)} keys, {self._bytes} bytes, "
            f"active={self._active}>"
        )

    # -- configuration -------------------------------------------------------

    def bind_prefix(self, *prefixes: str) -> None:
        """Track (and keep) every key that starts with one of *prefixes*.

        Redis refuses overlapping prefixes, so a prefix covered by one
        already bound is skipped, and one that covers bound ones replaces
        them.  Bound while tracking runs, tracking restarts (emptied), once.
        """
        if not all(prefixes):
            raise ValueError("a tracked prefix cannot be empty")
        with self._lock:
            bound = self._prefixes
            for prefix in prefixes:
                if not prefix.startswith(bound):
                    kept = [p for p in bound if not p.startswith(prefix)]
                    bound = (*kept, prefix)
            if bound == self._prefixes:
                return
            self._prefixes = bound
            tracker = self._tracker
        if tracker is not None:
            self._deactivate()
            tracker.restart()

    @property
    def prefixes(self) -> tuple[str, ...]:
        return self._prefixes

    @property
    def active(self) -> bool:
        """Whether tracking is established and the near cache in use."""
        return self._active

    @property
    def size(self) -> int:
        """Bytes held, as counted against ``max_bytes``."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def peek(self, key: str) -> _Entry | None:
        """The local entry of *key* (value, expiry), for tests and debugging;
        no statistics, no recency."""
        return self._data.get(key)

    def stats(self) -> dict[str, int | bool]:
        return {
            "near_hits": self.hits,
            "near_misses": self.misses,
            "near_bypassed": self.bypassed,
            "near_invalidations": self.invalidations,
            "near_flushes": self.flushes,
            "near_sessions": self.sessions,
            "near_keys": len(self._data),
            "near_bytes": self._bytes,
            "near_active": self._active,
        }

    def close(self) -> None:
        """Stop tracking and drop everything."""
        tracker = self._tracker
        self._tracker = None
        self._deactivate()
        if tracker is not None:
            tracker.stop()

    @property
    def generation(self) -> int | None:
        """A count that changes whenever a read could answer otherwise than
        before: a value kept, dropped or evicted, everything flushed, or a
        read that asked the server for keys not held; ``None`` while the
        store may not answer (see :mod:`jinja_fragcache.memo`).  While it
        stays the same, a read of keys it answered before would answer the
        same from memory."""
        quiet = self._catch_up()
        with self._lock:
            return self._changes if self._usable(quiet) else None

    # -- reads -----------------------------------------------------------------

    def _tracked(self, key: str) -> bool:
        return key.startswith(self._prefixes)

    def _catch_up(self) -> bool:
        """Apply the invalidations that have arrived, in this thread (no
        round trip): waiting for the tracking thread to wake would leave
        the store unusable meanwhile.  Whether nothing was left waiting."""
        with self._lock:  # a poll object is not for two threads at once
            if self._poll is None or self._tracker is None:
                return False
            ready = self._poll.poll(0)
            if not ready:
                return True
            tracker, registered = self._tracker, self._registered
        if registered is not None and any(fd == registered.fd for fd, _ in ready):
            # A reply on its way to the lookup that holds it, or the end of
            # an idle one (which ends the session).
            if not registered.quiet():
                return False
            if len(ready) == 1:
                return True
        return tracker.catch_up()

    def _usable(self, quiet: bool) -> bool:
        """Under the lock: may the store answer now?  *quiet*: nothing was
        waiting on the tracking connection (or the registered one) a moment
        ago."""
        if not self._active or self._processing or self._partial:
            return False
        # An invalidation not read yet, or the connection's end (EOF is
        # readable too): ask the server instead.
        if not quiet and self._poll.poll(0):
            return False
        # Checked after the poll: a registered connection closed before it
        # may have left its file descriptor number to another socket.
        registered = self._registered
        return registered is None or registered.conn._sock is not None

    def plan(self, keys: Sequence[str]) -> Plan:
        """Answer what memory can; say what the server must be asked.

        The caller reads ``plan.missing`` with :meth:`complete`, or all of
        *keys* the plain way when ``plan.values`` is ``None``.
        """
        self._ensure_tracking()
        quiet = self._catch_up()
        now = time.monotonic()
        with self._lock:
            if not self._usable(quiet):
                self.bypassed += 1
                return Plan(None, [], self._epoch, now)
            data = self._data
            values: list[bytes | None] = []
            missing: list[int] = []
            for i, key in enumerate(keys):
                entry = data.get(key)
                if entry is not None and entry[1] > now:
                    data.move_to_end(key)
                    values.append(entry[0])
                    continue
                values.append(None)
                missing.append(i)
                if self._tracked(key):  # untracked keys are read, never kept
                    self._inflight[key] = self._inflight.get(key, 0) + 1
            self.hits += len(keys) - len(missing)
            if missing:
                self.misses += len(missing)
                self._changes += 1
            return Plan(values, missing, self._epoch, now)

    def complete(
        self,
        keys: Sequence[str],
        plan: Plan,
        fetched: Sequence[tuple[bytes | None, int]] | None,
        written: Collection[str] = (),
    ) -> list[bytes | None]:
        """Merge what the server returned for ``plan.missing``: each value
        with its ``PTTL`` in milliseconds (``-1`` none, ``-2`` missing).
        *fetched* ``None`` means the read failed: only release the keys.

        *written*: keys of ``plan.missing`` that the read wrote itself
        before reading them, on the registered connection (:meth:`lend`),
        so that no message of the write comes: other reads of them in
        flight may predate the write, and are treated as its message would
        have them be, whether the read succeeded or not."""
        assert plan.values is not None
        values = plan.values
        with self._lock:
            keep = plan.epoch == self._epoch and self._active
            for n, i in enumerate(plan.missing):
                key = keys[i]
                if fetched is not None:
                    values[i] = fetched[n][0]
                dirty = key in self._dirty
                if not self._release(key):
                    continue  # untracked
                if key in written:
                    self._drop(key)
                    if key in self._inflight:
                        self._dirty.add(key)
                if fetched is None:
                    if key not in self._inflight:
                        self._dirty.discard(key)
                    continue  # failed
                value, pttl = fetched[n]
                if keep and not dirty:
                    expires = math.inf if pttl < 0 else plan.started + pttl / 1000
                    self._put(key, value, expires)
                if key not in self._inflight:
                    self._dirty.discard(key)
        return values

    def _release(self, key: str) -> bool:
        count = self._inflight.get(key)
        if count is None:
            return False
        if count > 1:
            self._inflight[key] = count - 1
        else:
            del self._inflight[key]
        return True

    def lend(self) -> Registered | None:
        """The session's registered connection, held by the caller until
        ``give_back()``; ``None`` when there is none or it is in use.  The
        server echoes nothing that is written through it, so the caller
        applies its writes here itself: :meth:`complete` with ``written``,
        or :meth:`begin_write` and :meth:`end_write`.  A command on it that
        fails calls its ``lose()``: that ends the session."""
        registered = self._registered
        if registered is None or not registered.take():
            return None
        return registered

    # -- writes ----------------------------------------------------------------

    def begin_write(self, keys: Iterable[str]) -> WriteToken:
        """Drop *keys* before a write is sent, and mark reads in flight of
        them: whatever such a read returns may predate the write."""
        self._ensure_tracking()
        tracked = [k for k in keys if self._tracked(k)]
        if not tracked:  # a miss's locks: nothing to drop, nothing to keep
            return _NO_KEYS
        with self._lock:
            for key in tracked:
                self._drop(key)
                if key in self._inflight:
                    self._dirty.add(key)
                self._inflight[key] = self._inflight.get(key, 0) + 1
            return WriteToken(tracked, self._epoch, time.monotonic())

    def end_write(
        self,
        token: WriteToken,
        known: Mapping[str, tuple[bytes | None, float | None]] | None = None,
    ) -> None:
        """After the write: keep what it made known (``key: (value,
        timeout seconds or None)``) unless an invalidation of that key, or a
        flush, came meanwhile.  Always call it, with ``None`` on failure."""
        if not token.keys:
            return
        known = known or {}
        with self._lock:
            keep = token.epoch == self._epoch and self._active
            for key in token.keys:
                # A write also invalidates concurrent reads of the key that
                # started before it: they must not keep their older reply.
                dirty = key in self._dirty
                # A read that finished while the write was in flight may
                # have kept the value from before it.
                self._drop(key)
                self._release(key)
                if key in self._inflight:
                    self._dirty.add(key)
                else:
                    self._dirty.discard(key)
                if keep and not dirty and key in known:
                    value, timeout = known[key]
                    expires = math.inf if timeout is None else token.started + timeout
                    self._put(key, value, expires)

    # -- the store -------------------------------------------------------------

    def _put(self, key: str, value: bytes | None, expires: float) -> None:
        size = len(key) + (len(value) if value is not None else 0) + ENTRY_OVERHEAD
        if size > self.max_bytes:
            return
        self._changes += 1
        self._drop(key)
        self._data[key] = (value, expires)
        self._bytes += size
        while self._bytes > self.max_bytes:
            old_key, (old_value, _) = self._data.popitem(last=False)
            self._bytes -= self._size(old_key, old_value)

    @staticmethod
    def _size(key: str, value: bytes | None) -> int:
        return len(key) + (len(value) if value is not None else 0) + ENTRY_OVERHEAD

    def _drop(self, key: str) -> None:
        entry = self._data.pop(key, None)
        if entry is not None:
            self._bytes -= self._size(key, entry[0])
            self._changes += 1

    def _flush(self) -> None:
        """Under the lock: drop everything, and every reply in flight."""
        self._data.clear()
        self._bytes = 0
        self._epoch += 1
        self._changes += 1
        self.flushes += 1

    # -- what the tracking thread calls ------------------------------------------

    def _invalidate(self, keys: list[str] | None, partial: bool = False) -> None:
        with self._lock:
            if keys is None:
                self._flush()
            else:
                for key in keys:
                    self._drop(key)
                    if key in self._inflight:
                        self._dirty.add(key)
                self.invalidations += len(keys)
            self._processing = False
            self._partial = partial

    def _begin_processing(self) -> None:
        with self._lock:
            self._processing = True

    def _activate(
        self, fd: int, registered: Registered | None = None, session: object = None
    ) -> None:
        poll = select.poll()
        poll.register(fd, select.POLLIN | select.POLLPRI)
        if registered is not None:
            poll.register(registered.fd, select.POLLIN | select.POLLPRI)
        with self._lock:
            self._flush()
            self._poll = poll
            self._registered = registered
            self._session = session
            self._processing = self._partial = False
            self._active = True
            self.sessions += 1

    def _deactivate(self, session: object = None) -> None:
        """Empty and bypass the store; given *session*, only while that
        session is the active one (a failure seen late, on an ended
        session's connection, leaves the next session alone)."""
        with self._lock:
            if session is not None and session is not self._session:
                return
            self._active = False
            self._poll = None
            self._registered = None
            self._session = None
            self._flush()

    def _refuse(self, reason: object) -> None:
        with self._lock:
            self.refused = True
            self._active = False
            self._flush()
        logger.warning(
            "Redis refused client-side tracking (%s): the near cache is off, "
            "every read goes to the server",
            reason,
        )

    def _ensure_tracking(self) -> None:
        # A forked child is reset by the at-fork hook, so no pid check here.
        if self._tracker is not None or self.refused or not self._prefixes:
            return
        with self._lock:
            if self._tracker is not None or self.refused:
                return
            self._tracker = Tracker(self, self._connect, self._register)
        self._tracker.start()

    def _forked(self) -> None:
        """In a forked child: the parent's thread is gone and its connection
        is the parent's.  Start empty; tracking starts again on first use."""
        tracker = self._tracker
        prefixes, max_bytes = self._prefixes, self.max_bytes
        self._init_state()
        self._prefixes, self.max_bytes = prefixes, max_bytes
        if tracker is not None:
            tracker.abandon()
