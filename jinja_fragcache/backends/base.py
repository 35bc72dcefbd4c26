"""The contract every backend keeps.

A backend stores bytes under string keys (an in-process one may keep
entries as they are: see ``keeps_entries`` below).  It never pickles: the fragment
cache encodes its own values (see :mod:`jinja_fragcache.entry`), so a shared
store that an attacker can write to yields at worst a corrupt entry, never
code execution.

Timeouts follow Django's meaning, checked before they reach a backend:
``None`` is "never expire" and a positive number is seconds (floats allowed).
``0`` never reaches a backend: it means "do not cache" and the fragment
cache handles it itself.

Errors are the backend's own (``ConnectionError``, ``TimeoutError``, the
client library's exceptions).  The fragment cache catches them, logs them and
renders uncached; a backend does not need to swallow anything.  An error
opens the circuit breaker (the backend is left alone for a while) unless it
is a *request error*: ``ValueError``, ``TypeError``, ``OverflowError``, or
one of the backend's ``request_errors`` (a server that answered and refused
this one request, such as a value too large).  Those fail that request only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

Timeout = float | None


class ClaimingRead(NamedTuple):
    """The first read of a lookup, for a backend that can do it all in one
    round trip (the optional ``read_claiming``).

    Read every entry and counter; create each missing counter with a value
    from *new_version* (the fragment cache's, so that versions stay
    unpredictable); and claim, for *lock_timeout* seconds, the lock of
    every entry that needs a render: stale ones always, missing or invalid
    ones when *claim_cold* is true.  The claims hold a token from
    *new_version* too.  One value per read serves as the token and as
    every counter it creates (a counter is only ever compared with what
    entries recorded under its own key), made only when needed.
    """

    entries: Sequence[str]
    #: The lock key of each entry.
    locks: Sequence[str]
    counters: Sequence[str]
    claim_cold: bool
    lock_timeout: float
    new_version: Callable[[], bytes]


#: A NamedTuple made from a tuple of every one of its fields:
#: ``made(Claimed, (values, claims, nested, token))``.  What the lookup path
#: makes on every miss is made so: a NamedTuple's own ``__new__`` is a
#: Python function, which costs about 1,500 instructions more a tuple.
made = tuple.__new__


#: A claim's outcome, per entry.
UNCLAIMED, WON, HELD = 0, 1, 2


class Claimed(NamedTuple):
    """What a ``read_claiming`` found."""

    #: The value of each entry, then of each counter (as it is now).
    values: list[bytes | None]
    #: Per entry: :data:`UNCLAIMED` (the backend judged it needs no
    #: render), :data:`WON` (this token holds its lock) or :data:`HELD`
    #: (another request's token does).
    claims: list[int]
    #: Counters the entries record besides those asked for, read too.
    nested: dict[str, bytes | None]
    #: The token of the claims (empty when nothing was claimed).
    token: bytes = b""


def request_errors(backend: object) -> tuple[type[Exception], ...]:
    """The backend's errors that come from a request, not from an outage:
    its optional ``request_errors`` attribute."""
    found = getattr(backend, "request_errors", ())
    return found if isinstance(found, tuple) else ()


@runtime_checkable
class Backend(Protocol):
    """Synchronous and asynchronous access to a key-value store."""

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Return the value of each key, ``None`` where it is missing.

        One round trip to the server, whatever the number of keys.
        """

    def set(self, key: str, value: bytes, timeout: Timeout) -> None:
        """Store *value*, replacing what was there."""

    def set_many(self, mapping: Mapping[str, bytes], timeout: Timeout) -> None:
        """Store every item of *mapping* in one round trip."""

    def add(self, key: str, value: bytes, timeout: Timeout) -> bool:
        """Store *value* only if *key* is missing; return whether it was stored.

        Atomic: of two concurrent ``add`` calls, exactly one returns ``True``.
        """

    def add_many(self, mapping: Mapping[str, bytes], timeout: Timeout) -> list[bool]:
        """``add`` each item, in one round trip where the server allows it."""

    def delete(self, key: str) -> None:
        """Remove *key*; a missing key is not an error."""

    def incr(self, key: str, delta: int = 1) -> int | None:
        """Add *delta* to the integer at *key* and return the result.

        Return ``None`` and create nothing when *key* is missing: a counter
        that reappeared at a predictable value could revive old entries.
        """

    async def aget_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Async :meth:`get_many`."""

    async def aset(self, key: str, value: bytes, timeout: Timeout) -> None:
        """Async :meth:`set`."""

    async def aset_many(self, mapping: Mapping[str, bytes], timeout: Timeout) -> None:
        """Async :meth:`set_many`."""

    async def aadd(self, key: str, value: bytes, timeout: Timeout) -> bool:
        """Async :meth:`add`."""

    async def aadd_many(
        self, mapping: Mapping[str, bytes], timeout: Timeout
    ) -> list[bool]:
        """Async :meth:`add_many`."""

    async def adelete(self, key: str) -> None:
        """Async :meth:`delete`."""

    async def aincr(self, key: str, delta: int = 1) -> int | None:
        """Async :meth:`incr`."""


# A backend may also offer the two halves of a miss in one round trip
# each, and the fragment cache then uses them instead of the steps above
# (see docs/design.md, "Misses in two round trips"):
#
#   read_claiming(read: ClaimingRead) -> Claimed
#   write_releasing(writes: Mapping[str, bytes], timeout: Timeout,
#                   locks: Sequence[str], token: bytes) -> None
#       Store *writes* and delete each lock that still holds *token*.
#
# and their async forms, aread_claiming and awrite_releasing.  Its
# judgement of which entries need a render may differ from the fragment
# cache's (a clock apart, say): the fragment cache renders what it won and
# claims, the usual way, what it needs and the backend did not claim.
#
# A backend of one process may set ``keeps_entries = True``: the entries
# that ``write_releasing`` stores then come as the fragment cache made them
# (:class:`~jinja_fragcache.entry.Entry`, not encoded), and reads return
# them as they are.  Nothing outside the process reads such a store, so an
# entry is neither encoded on a miss nor decoded on a hit (MemoryBackend).
#
# A backend may count the changes to what it holds, as ``generation``: an
# int that moves on every change a read could see (``None`` while it cannot
# tell).  The fragment cache then keeps a memo of checked hits, answered
# again while the count stays (:mod:`jinja_fragcache.memo`).  A backend
# whose count is ``None`` for good (RedisBackend without its near cache)
# sets ``counts_changes = False``, and gets no memo: no memo key is made
# for its lookups.
#
# A backend may also bump several counters in one call (a cluster spreading
# a name over shards bumps one counter per shard on ``invalidate_all``):
#
#   incr_many(keys: Sequence[str], delta: int) -> list[int | None]
#       ``incr`` of each key, creating none; and its async form, aincr_many.


def compound(backend: object) -> bool:
    """Whether *backend* offers ``read_claiming`` and ``write_releasing``."""
    return callable(getattr(backend, "read_claiming", None)) and callable(
        getattr(backend, "write_releasing", None)
    )


class SyncBackendMixin:
    """Async methods for a backend whose sync methods never block on I/O.

    Right for in-process stores only: a network backend must implement the
    async methods natively, or every ``render_async`` would block its loop.
    """

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        raise NotImplementedError

    def set(self, key: str, value: bytes, timeout: Timeout) -> None:
        raise NotImplementedError

    def set_many(self, mapping: Mapping[str, bytes], timeout: Timeout) -> None:
        raise NotImplementedError

    def add(self, key: str, value: bytes, timeout: Timeout) -> bool:
        raise NotImplementedError

    def add_many(self, mapping: Mapping[str, bytes], timeout: Timeout) -> list[bool]:
        return [self.add(key, value, timeout) for key, value in mapping.items()]

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def incr(self, key: str, delta: int = 1) -> int | None:
        raise NotImplementedError

    async def aget_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return self.get_many(keys)

    async def aset(self, key: str, value: bytes, timeout: Timeout) -> None:
        self.set(key, value, timeout)

    async def aset_many(self, mapping: Mapping[str, bytes], timeout: Timeout) -> None:
        self.set_many(mapping, timeout)

    async def aadd(self, key: str, value: bytes, timeout: Timeout) -> bool:
        return self.add(key, value, timeout)

    async def aadd_many(
        self, mapping: Mapping[str, bytes], timeout: Timeout
    ) -> list[bool]:
        return self.add_many(mapping, timeout)

    async def adelete(self, key: str) -> None:
        self.delete(key)

    async def aincr(self, key: str, delta: int = 1) -> int | None:
        return self.incr(key, delta)
