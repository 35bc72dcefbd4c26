"""Hits answered from memory, on a backend that says when it changed.

A :class:`~jinja_fragcache.backends.memory.MemoryBackend` counts every
change to what it holds, and a :class:`~jinja_fragcache.backends.redis.
RedisBackend` its near cache's (:attr:`generation`: every value kept,
dropped or evicted, every read that went past it, every invalidation the
server sent; ``None`` while the near cache may not answer).  While the
count stays what it was when a hit was checked, reading again would find
the same entry and the same counters: the hit can be answered again from
here, with no read, no decoding and no version check, and as coherently
as the near cache itself.  Its soft expiry is still checked, and
what a hit reports (to the fragment around it, the page's recording and
the statistics) is reported as before.

A memo is kept only for a fresh hit, under no debug checks: of one
variant, whose body, if it has holes, is remembered as stored and filled
on each render, as on any hit; or of a ``cache_each`` collection whose
items have no holes, remembered joined.  Its key holds what decides the answer: the
template, the block's digest, the fragment's name, its timeout and tags,
and the vary values' identities (:mod:`jinja_fragcache.identity`).  Any
write, delete, eviction or expiry in the backend, by any fragment, makes
every memo of that backend unusable at once; the next hit reads as usual
and is remembered again.  Other backends have no such count, and get no
memo; nor does one whose count is ``None`` for good (``counts_changes =
False``: a RedisBackend without its near cache).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeVar

from .backends.base import made
from .holes import MARK

if TYPE_CHECKING:
    from .identity import VaryIdentity
    from .lookup import Read
    from .requests import FragmentRequest


_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class Remembered(NamedTuple):
    """A checked hit, and the backend's generation when it was read."""

    generation: int
    #: The stored body: its holes, if any, still to fill.
    body: str
    soft_expiry: float | None
    versions: dict[str, str]
    #: The request it answered (its context is that render's).
    request: FragmentRequest
    keys: list[str]
    #: Whether the body has holes to fill.
    holed: bool
    #: How many variants it answers (a collection's items, joined).
    variants: int = 1

    @classmethod
    def of(
        cls,
        generation: int,
        stored: Sequence[str],
        read: Read,
        request: FragmentRequest,
    ) -> Remembered | None:
        """A fresh hit's *stored* bodies and the entries *read* found, as
        one remembered hit; ``None`` for a collection whose items have
        holes (each is filled on its own)."""
        if len(stored) > 1 and any(MARK in body for body in stored):
            return None
        versions: dict[str, str] = {}
        expiries = []
        for entry in read.entries:
            if entry is not None:
                versions.update(entry.versions)
                if entry.soft_expiry is not None:
                    expiries.append(entry.soft_expiry)
        body = stored[0] if len(stored) == 1 else "".join(stored)
        fields = (
            generation,
            body,
            min(expiries, default=None),
            versions,
            request.rendering(None, None, request.line),  # kept without them
            read.keys,
            MARK in body,
            len(stored),
        )
        return made(cls, fields)


def memo_key(
    identity: VaryIdentity,
    template: str | None,
    digest: str,
    name: str,
    timeout: object,
    tags: object,
    vary: Sequence[object],
    items: bool = False,
) -> Hashable:
    """What decides a hit of a tag: its template, the block's digest, the
    name, the timeout and tags as given, and the vary values (as
    :meth:`~.identity.VaryIdentity.memo_view` gives them: *items* for a
    ``cache_each`` page's, a tuple per item); ``None`` when a
    value cannot be part of a key (the usual lookup then says why, with the
    template and the line).  The key may still be unhashable (a timeout
    given as a list, say): ``FragmentCache.remembered`` and
    :meth:`HitMemo.keep` take that as a miss."""
    try:
        strings = identity.memo_view(vary, items)
    except Exception:  # noqa: BLE001 - the lookup reports it
        return None
    listed = tags if tags is None or type(tags) is not list else tuple(tags)
    return (template, digest, name, timeout, listed, strings)


def strings_of(key: Hashable) -> tuple[str, ...]:
    """The vary values' strings (:meth:`~.identity.VaryIdentity.strings`)
    that a key of :func:`memo_key` holds (of one variant, not *items*):
    each value's ``str()``, since the
    memo view holds plain ints and strs as they are, or strings already.  A
    miss that tried the memo so converts its vary values once."""
    return tuple(map(str, key[-1]))  # type: ignore[index]


class ByteBounded(Generic[_K, _V]):
    """A dict bounded by the bytes its values stand for."""

    def __init__(self, max_bytes: int = 8 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._values: dict[_K, _V] = {}
        self._bytes = 0
        #: The value kept under a key, or ``None``: the dict's own ``get``,
        #: with no call of Python's in between (every remembered hit's).
        self.get: Callable[[_K], _V | None] = self._values.get

    def put(self, key: _K, value: _V, size: int) -> None:
        if self._bytes + size > self.max_bytes:
            # Dropping all at once keeps this lock-free; what was dropped
            # is simply made again.
            self._values.clear()
            self._bytes = 0
        self._values[key] = value
        self._bytes += size


class HitMemo(ByteBounded[Hashable, Remembered]):
    """Checked hits by key, bounded by the bytes of their bodies."""

    def keep(self, key: Hashable, remembered: Remembered) -> None:
        with contextlib.suppress(TypeError):  # unhashable: not kept
            self.put(key, remembered, len(remembered.body))
