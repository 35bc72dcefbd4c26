"""The first read of a lookup without the near cache, whole:
:data:`~.scripts.JUDGE_CLAIMING` and the ``MGET`` of the entries behind it
in one packet (:class:`Judging`, one per set of keys), what its last
judgement lets the next lookup expect (:class:`Expectation`), kept per
backend (:class:`Judges`); and how every script of
:data:`~.scripts.LIBRARY` reaches the server: as a function, the library
loaded again where the server lacks it, or by its SHA1 where the server
has no functions (:class:`Calls`, one per :class:`~.redis.RedisBackend`)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from ..keys import lock_key
from . import scripts
from .base import UNCLAIMED, Claimed, ClaimingRead, made
from .codecs import _nested
from .wire import Arg, AsyncWire, Wire, pack

if TYPE_CHECKING:
    from ..tracking import Registered

#: How many lookups' first packets a backend keeps packed, with what each
#: expects (a few hundred bytes each); past that it forgets them all and
#: starts again.
_JUDGINGS = 4096


class Calls:
    """How a backend's scripts reach the server: as functions of
    :data:`~.scripts.LIBRARY` (``FCALL``), the library loaded again where
    the server lacks it (:meth:`again`), or by SHA1 (``EVALSHA``) once the
    server refused functions for good.

    :param refused: the client's error reply (``redis.ResponseError``).
    """

    def __init__(self, refused: type[Exception]) -> None:
        self.refused = refused
        #: As functions, until the server refuses them for good.
        self.by_function = True

    def head(self, script: scripts.Script) -> tuple[Arg, ...]:
        """A call of *script* but for its keys and arguments."""
        if self.by_function:
            return ("FCALL", script.name)
        return ("EVALSHA", script.sha)

    def call(
        self,
        wire: Wire,
        script: scripts.Script,
        keys: Sequence[Arg],
        args: Sequence[Arg],
        lent: Registered | None = None,
        ahead: tuple[bytes, int] = (b"", 0),
    ) -> Any:
        """*script*'s reply, on *keys* and *args*: one round trip on *wire*
        (two, once per server start, where the server lacks it).  On *lent*
        (see :meth:`~.wire.Wire.exchange_on`), with *ahead*'s commands
        (packed, and their count) in the same packet, before it; sent again,
        the call goes without them, on *wire*."""
        command = (len(keys), *keys, *args)
        packed, count = ahead
        packed += pack((*self.head(script), *command))
        try:
            if lent is None:
                return wire.exchange(packed, count + 1)[-1]
            return wire.exchange_on(lent, packed, count + 1)[-1]
        except self.refused as exc:
            if not lacks_script(exc):
                raise
        return self.again(wire, script, command)[0]

    async def acall(
        self,
        wire: AsyncWire,
        script: scripts.Script,
        keys: Sequence[Arg],
        args: Sequence[Arg],
        ahead: tuple[bytes, int] = (b"", 0),
    ) -> Any:
        """Async :meth:`call` (never on a lent connection)."""
        command = (len(keys), *keys, *args)
        packed, count = ahead
        packed += pack((*self.head(script), *command))
        try:
            return (await wire.exchange(packed, count + 1))[-1]
        except self.refused as exc:
            if not lacks_script(exc):
                raise
        return (await self.aagain(wire, script, command))[0]

    def again(
        self,
        wire: Wire,
        script: scripts.Script,
        command: tuple[Arg, ...],
        *behind: tuple[Arg, ...],
    ) -> list[Any]:
        """The replies of *script*'s call (*command*: its keys' count, keys
        and arguments) and of the commands *behind* it, sent again to a
        server that lacked the script: with the library loaded ahead of the
        call (one round trip more, once per server start, as ``NOSCRIPT``
        costs).  A server that refuses functions for good (before Redis 7,
        or ACL) is sent the script itself, now, and by SHA1 from then on."""
        if self.by_function:
            try:
                return wire.pipeline(*self._loading(script, command, behind))[1:]
            except self.refused as exc:
                if not lacks_functions(exc):
                    raise
            self.by_function = False
        return wire.pipeline(("EVAL", script.source, *command), *behind)

    async def aagain(
        self,
        wire: AsyncWire,
        script: scripts.Script,
        command: tuple[Arg, ...],
        *behind: tuple[Arg, ...],
    ) -> list[Any]:
        """Async :meth:`again`."""
        if self.by_function:
            try:
                loading = self._loading(script, command, behind)
                return (await wire.pipeline(*loading))[1:]
            except self.refused as exc:
                if not lacks_functions(exc):
                    raise
            self.by_function = False
        return await wire.pipeline(("EVAL", script.source, *command), *behind)

    @staticmethod
    def _loading(
        script: scripts.Script,
        command: tuple[Arg, ...],
        behind: tuple[tuple[Arg, ...], ...],
    ) -> tuple[tuple[Arg, ...], ...]:
        """The library loaded, then *script*'s call and *behind*."""
        load = ("FUNCTION", "LOAD", "REPLACE", scripts.LIBRARY)
        return load, ("FCALL", script.name, *command), *behind


class Judges:
    """A backend's lookups without the near cache: the packet of each set
    of keys, kept, calling the script as *calls* says (see
    :meth:`Calls.again`)."""

    def __init__(self, calls: Calls) -> None:
        self._calls = calls
        #: The first packet of recent lookups, by their keys.
        self._judgings: dict[tuple[Any, ...], Judging] = {}

    def judging(self, read: ClaimingRead) -> Judging | None:
        """The first packet of a lookup of *read*'s keys, kept per set of
        keys; ``None`` for a read whose locks the script cannot name."""
        entries, locks, counters, claim_cold, lock_timeout, _ = read
        shape = (claim_cold, lock_timeout, *entries, *locks, *counters)
        judging = self._judgings.get(shape)
        if judging is None:
            if not Judging.fits(read):
                return None
            if len(self._judgings) >= _JUDGINGS:
                self._judgings.clear()
            call = self._calls.head(scripts.JUDGE)
            judging = self._judgings[shape] = Judging(read, call)
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
        except self._calls.refused as exc:
            if not lacks_script(exc):
                raise
            command, mget = judging.again(spec)
            reply, found = self._calls.again(wire, scripts.JUDGE, command, mget)
            self._called_again(judging)
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
        except self._calls.refused as exc:
            if not lacks_script(exc):
                raise
            command, mget = judging.again(spec)
            calls = self._calls
            reply, found = await calls.aagain(wire, scripts.JUDGE, command, mget)
            self._called_again(judging)
            expecting = None
        return judging.judged(read, token, reply, found, expecting)

    def _called_again(self, judging: Judging) -> None:
        """Forget every packet kept once *judging*'s calls the script
        otherwise than :attr:`_calls` does now: the server refused
        functions (this call, or another script's)."""
        if judging.call != self._calls.head(scripts.JUDGE):
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
        "call",
        "_entries",
        "_counters",
        "_plain",
        "_spec",
        "_mget",
        "expecting",
    )

    def __init__(self, read: ClaimingRead, call: tuple[Arg, ...]) -> None:
        """*call*: how the packet calls the script (:meth:`Calls.head`)."""
        entries, m = read.entries, len(read.counters)
        #: How the packet calls the script (:meth:`Calls.head`).
        self.call = call
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

    def again(self, spec: bytes) -> tuple[tuple[Arg, ...], tuple[Arg, ...]]:
        """The first packet's script call, but for its head, expecting
        nothing (*spec*: its last argument), and its ``MGET``: for
        :meth:`Calls.again`."""
        entries = self._entries
        command: tuple[Arg, ...] = (len(entries), *entries, *self._counters)
        return (*command, b"", spec), ("MGET", *entries)

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
            return made(
                Claimed, (values + expecting.values, claims, expecting.nested, b"")
            )
        end = n + len(read.counters)
        counters, soonest, nested = reply[n:end], reply[end], _nested(reply, end + 1)
        self.expecting = self._expecting(counters, soonest, nested)
        return made(Claimed, (values + counters, reply[:n], nested, token))

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
        return made(Expectation, (packed, until, counters, nested))

    def _packed(self, counters: tuple[str, ...], expected: bytes) -> bytes:
        """:data:`~.scripts.JUDGE_CLAIMING` on the entries and *counters*,
        expecting *expected* (the values joined; empty: nothing), packed
        but for its last argument."""
        entries = self._entries
        command = (*self.call, len(entries), *entries, *counters, expected)
        return pack(command, more=1)


def lacks_functions(exc: Exception) -> bool:
    """Whether the server refused a function's call or load for good: it
    has none (before Redis 7), or this user may not (ACL)."""
    text = str(exc)
    return text.startswith("unknown command") or "no permissions" in text


def lacks_script(exc: Exception) -> bool:
    """Whether *exc*, an error reply to a packet that calls a script, says
    that the server lacks it (a restart, ``FUNCTION FLUSH``, ``SCRIPT
    FLUSH``)."""
    text = str(exc)
    return text.startswith(("Function not found", "No matching script")) or (
        lacks_functions(exc)
    )
