"""The first read of a lookup without the near cache, whole:
:data:`~.scripts.JUDGE_CLAIMING` and the ``MGET`` of the entries behind it
in one packet (:class:`Judging`, one per set of keys), what its last
judgement lets the next lookup expect (:class:`Expectation`), and how the
script reaches the server: as a function, loaded again where the server
lacks it, or by its SHA1 where the server has no functions
(:class:`Judges`, one per :class:`~.redis.RedisBackend`)."""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

from ..keys import lock_key
from . import scripts
from .base import UNCLAIMED, Claimed, ClaimingRead
from .codecs import _nested
from .wire import Arg, AsyncWire, Wire, pack

_JUDGE_CLAIMING_SHA = scripts.sha(scripts.JUDGE_CLAIMING)

#: How :class:`Judging` calls :data:`~.scripts.JUDGE_CLAIMING`: as a
#: function, or by its SHA1 on a server without functions.
BY_FUNCTION: tuple[Arg, ...] = ("FCALL", scripts.JUDGE_FUNCTION)
BY_SHA: tuple[Arg, ...] = ("EVALSHA", _JUDGE_CLAIMING_SHA)

#: How many lookups' first packets a backend keeps packed, with what each
#: expects (a few hundred bytes each); past that it forgets them all and
#: starts again.
_JUDGINGS = 4096


class Judges:
    """A backend's lookups without the near cache: the packet of each set
    of keys, kept, and how they call the script (see :meth:`_loading`).

    :param refused: the client's error reply (``redis.ResponseError``).
    """

    def __init__(self, refused: type[Exception]) -> None:
        self._refused = refused
        #: The first packet of recent lookups, by their keys.
        self._judgings: dict[tuple[Any, ...], Judging] = {}
        #: How they call the script: as a function, until the server
        #: refuses functions for good.
        self._call: tuple[Arg, ...] = BY_FUNCTION

    def judging(self, read: ClaimingRead) -> Judging | None:
        """The first packet of a lookup of *read*'s keys, kept per set of
        keys; ``None`` for a read whose locks the script cannot name."""
        shape = (read.claim_cold, read.lock_timeout, *read.entries)
        shape += (*read.locks, *read.counters)
        judging = self._judgings.get(shape)
        if judging is None:
            if not Judging.fits(read):
                return None
            if len(self._judgings) >= _JUDGINGS:
                self._judgings.clear()
            judging = self._judgings[shape] = Judging(read, self._call)
        return judging

    def read(self, wire: Wire, read: ClaimingRead) -> Claimed | None:
        """*read* in one round trip on *wire* (two, once per server start,
        for a server that lacks the script); ``None`` for a read the
        script cannot claim for (:meth:`Judging.fits`)."""
        judging = self.judging(read)
        if judging is None:
            return None
        token, spec, packet, expecting = judging.packet(read)
        try:
            reply, found = wire.exchange(packet, 2)
        except self._refused as exc:
            if not lacks_judging(exc):
                raise
            reply, found = self._loading(wire, judging, spec)
            expecting = None
        return judging.judged(read, token, reply, found, expecting)

    async def aread(self, wire: AsyncWire, read: ClaimingRead) -> Claimed | None:
        """Async :meth:`read`."""
        judging = self.judging(read)
        if judging is None:
            return None
        token, spec, packet, expecting = judging.packet(read)
        try:
            reply, found = await wire.exchange(packet, 2)
        except self._refused as exc:
            if not lacks_judging(exc):
                raise
            reply, found = await self._aloading(wire, judging, spec)
            expecting = None
        return judging.judged(read, token, reply, found, expecting)

    def _loading(self, wire: Wire, judging: Judging, spec: bytes) -> list[Any]:
        """The replies of *judging*'s first packet, sent again to a server
        that lacked the script: with the library loaded ahead of the call
        (one round trip more, once per server start, as ``NOSCRIPT``
        costs).  A server that refuses functions for good (before Redis 7,
        or ACL) is sent the script itself, now and from then on."""
        call = self._call
        try:
            return wire.pipeline(*judging.loading(spec, call))[-2:]
        except self._refused as exc:
            if call != BY_FUNCTION or not lacks_functions(exc):
                raise
        self._without_functions()
        return wire.pipeline(*judging.loading(spec, BY_SHA))

    async def _aloading(
        self, wire: AsyncWire, judging: Judging, spec: bytes
    ) -> list[Any]:
        """Async :meth:`_loading`."""
        call = self._call
        try:
            return (await wire.pipeline(*judging.loading(spec, call)))[-2:]
        except self._refused as exc:
            if call != BY_FUNCTION or not lacks_functions(exc):
                raise
        self._without_functions()
        return await wire.pipeline(*judging.loading(spec, BY_SHA))

    def _without_functions(self) -> None:
        """Call the script by its SHA1 from now on: every packet kept
        called it as a function, and is forgotten."""
        self._call = BY_SHA
        self._judgings.clear()


class Expectation(NamedTuple):
    """What a lookup without the near cache may expect of its keys, from
    the last judgement of them all fresh: its counters' values, until the
    soonest soft expiry it saw (see :data:`~.scripts.JUDGE_CLAIMING`)."""

    #: The script asking only whether each counter still holds its value,
    #: packed but for its last argument.
    packed: bytes
    #: Unix seconds: the soonest soft expiry of the entries judged.
    until: float
    #: The value of each counter read (``ClaimingRead.counters``).
    values: list[bytes | None]
    #: The other counters the entries recorded (nested fragments'), by key.
    nested: dict[str, bytes | None]


class Judging:
    """The first packet of a lookup without the near cache, for one set of
    keys: :data:`~.scripts.JUDGE_CLAIMING` and the ``MGET`` of the entries
    behind it, packed once (packing fifteen arguments in Python costs more
    than the rest of a hit's client side) but for the script's last
    argument, which holds the clock and the token; and what the script's
    last judgement of these keys lets the next lookup expect."""

    __slots__ = (
        "_call",
        "_entries",
        "_counters",
        "_plain",
        "_spec",
        "_mget",
        "expecting",
    )

    def __init__(self, read: ClaimingRead, call: tuple[Arg, ...]) -> None:
        """*call*: :data:`BY_FUNCTION` or :data:`BY_SHA`."""
        entries, m = read.entries, len(read.counters)
        self._call = call
        self._entries: tuple[str, ...] = tuple(entries)
        self._counters: tuple[str, ...] = tuple(read.counters)
        self._plain = self._packed(self._counters, b"")
        px = max(1, math.ceil(read.lock_timeout * 1000))
        self._spec = b"%d %d %d " % (m, read.claim_cold, px)
        self._mget = pack(("MGET", *entries))
        #: Set by :meth:`judged`; read once per packet (threads share it).
        self.expecting: Expectation | None = None

    @staticmethod
    def fits(read: ClaimingRead) -> bool:
        """Whether the script can claim for *read*: it makes each lock key
        from its entry's key, as :func:`~jinja_fragcache.keys.lock_key`
        does (every lookup's are)."""
        return all(map(str.__eq__, map(lock_key, read.entries), read.locks))

    def packet(
        self, read: ClaimingRead
    ) -> tuple[bytes, bytes, bytes, Expectation | None]:
        """The token, the script's last argument, the packet, and what it
        expects (``None``: nothing, it judges every entry)."""
        token, now = read.new_version(), time.time()
        spec = self._spec + scripts.clock(now) + b" " + token
        expecting = self.expecting
        if expecting is not None and now < expecting.until:
            head = expecting.packed
        else:
            head, expecting = self._plain, None
        last = b"$%d\r\n%b\r\n" % (len(spec), spec)
        return token, spec, head + last + self._mget, expecting

    def loading(
        self, spec: bytes, call: tuple[Arg, ...]
    ) -> tuple[tuple[Arg, ...], ...]:
        """The first packet's commands, expecting nothing, for a server
        that lacked the script: the library loaded ahead of the call
        (*call* :data:`BY_FUNCTION`), or the script sent whole (``EVAL``,
        which loads it).  The last two replies are the packet's."""
        entries = self._entries
        args: tuple[Arg, ...] = (len(entries), *entries, *self._counters, b"", spec)
        if call == BY_FUNCTION:
            load = ("FUNCTION", "LOAD", "REPLACE", scripts.JUDGE_LIBRARY)
            return load, (*call, *args), ("MGET", *entries)
        return ("EVAL", scripts.JUDGE_CLAIMING, *args), ("MGET", *entries)

    def judged(
        self,
        read: ClaimingRead,
        token: bytes,
        reply: Any,
        found: list[Any],
        expecting: Expectation | None,
    ) -> Claimed:
        """A :class:`~.base.Claimed` from the script's *reply* and what the
        ``MGET`` behind it *found* of the entries (an empty value is
        missing); what it judged fresh becomes what the next lookup of
        these keys expects."""
        n = len(read.entries)
        # An empty entry is a missing one (an empty counter, from the
        # script, reads as corrupt: lookup.texts).
        values = found if all(found) else [v or None for v in found]
        if type(reply) is int:  # 0: every counter as expected
            assert expecting is not None
            claims = [UNCLAIMED] * n
            return Claimed(values + expecting.values, claims, expecting.nested)
        end = n + len(read.counters)
        counters, soonest, nested = reply[n:end], reply[end], _nested(reply, end + 1)
        self.expecting = self._expecting(counters, soonest, nested)
        return Claimed(values + counters, reply[:n], nested, token)

    def _expecting(
        self,
        counters: list[bytes | None],
        soonest: bytes,
        nested: dict[str, bytes | None],
    ) -> Expectation | None:
        """What a judgement that found every entry fresh until *soonest*
        (empty: it did not) lets the next lookup expect."""
        if not soonest or not (counters or nested):
            return None  # not all fresh, or nothing to confirm
        values = (*counters, *nested.values())
        expected = [value for value in values if value and b" " not in value]
        if len(expected) < len(values):
            return None  # missing, or joined they would not say each value
        try:  # a header's field as written; Lua reads a few more forms
            until = math.inf if soonest == b"-" else float(soonest)
        except ValueError:
            return None
        counted = (*self._counters, *nested)
        packed = self._packed(counted, b" ".join(expected))
        return Expectation(packed, until, counters, nested)

    def _packed(self, counters: tuple[str, ...], expected: bytes) -> bytes:
        """:data:`~.scripts.JUDGE_CLAIMING` on the entries and *counters*,
        expecting *expected* (the values joined; empty: nothing), packed
        but for its last argument."""
        entries = self._entries
        command = (*self._call, len(entries), *entries, *counters, expected)
        return pack(command, more=1)


def lacks_functions(exc: Exception) -> bool:
    """Whether the server refused a function's call or load for good: it
    has none (before Redis 7), or this user may not (ACL)."""
    text = str(exc)
    return text.startswith("unknown command") or "no permissions" in text


def lacks_judging(exc: Exception) -> bool:
    """Whether *exc*, an error reply to the first packet's call of
    :data:`~.scripts.JUDGE_CLAIMING`, says that the server lacks it (a
    restart, ``FUNCTION FLUSH``, ``SCRIPT FLUSH``)."""
    text = str(exc)
    return text.startswith(("Function not found", "No matching script")) or (
        lacks_functions(exc)
    )
