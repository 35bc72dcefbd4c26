"""The arguments and replies of the server-side scripts
(:mod:`.scripts`), as :class:`~.redis.RedisBackend` sends and reads them:
what its commands carry, packed or not, and what their replies mean.  The
backend itself keeps the connections and the near cache."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from ..keys import lock_key
from . import scripts
from .base import UNCLAIMED, Claimed, ClaimingRead, Timeout
from .wire import Arg, pack

_JUDGE_CLAIMING_SHA = scripts.sha(scripts.JUDGE_CLAIMING)

#: How :class:`Judging` calls :data:`~.scripts.JUDGE_CLAIMING`: as a
#: function, or by its SHA1 on a server without functions.
BY_FUNCTION: tuple[Arg, ...] = ("FCALL", scripts.JUDGE_FUNCTION)
BY_SHA: tuple[Arg, ...] = ("EVALSHA", _JUDGE_CLAIMING_SHA)


def _px(timeout: Timeout) -> int | None:
    return None if timeout is None else max(1, math.ceil(timeout * 1000))


def _as_bytes(value: bytes | str | None) -> bytes | None:
    # A client made with decode_responses=True hands back str.
    return value.encode() if isinstance(value, str) else value


def _with_ttls(reply: Sequence[Any]) -> list[tuple[bytes | None, int]]:
    """The script's flat ``[value, pttl, ...]`` as pairs; Lua's false is a
    missing value."""
    return [
        (
            _as_bytes(reply[i]) if reply[i] not in (None, False) else None,
            int(reply[i + 1]),
        )
        for i in range(0, len(reply), 2)
    ]


def _key(value: bytes | str) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else value


def _claiming(
    read: ClaimingRead, token: bytes, ttls: bool
) -> tuple[list[str], list[Any]]:
    """The keys and arguments of :data:`~.scripts.READ_CLAIMING` for the
    near cache, which keeps what it reads: every value, and its PTTL when
    *ttls*."""
    keys = [*read.entries, *read.locks, *read.counters]
    flags = "nt" if ttls else "n"
    options = [len(read.entries), int(read.claim_cold), _px(read.lock_timeout)]
    return keys, [*options, flags, scripts.clock(), token]


def _claimed(
    read: ClaimingRead, token: bytes, reply: Sequence[Any]
) -> tuple[Claimed, list[int]]:
    """The script's flat reply (bytes: it came through :mod:`.wire`) as a
    :class:`~.base.Claimed`, and each value's PTTL (entries, then counters)
    for the near cache."""
    n, m = len(read.entries), len(read.counters)
    entries, end = 3 * n, 3 * n + 2 * m
    # Lua's false is a missing value (and so is an empty one).
    values = [v or None for v in (*reply[0:entries:3], *reply[entries:end:2])]
    pttls = [*reply[1:entries:3], *reply[entries + 1 : end : 2]]
    claims = list(reply[2:entries:3])
    return Claimed(values, claims, _nested(reply, end), token), pttls


def _nested(reply: Sequence[Any], start: int) -> dict[str, bytes | None]:
    """The nested counters that follow the script's reply proper."""
    if len(reply) <= start:
        return {}
    rest = reply[start:]
    return {_key(rest[i]): rest[i + 1] or None for i in range(0, len(rest), 2)}


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


def _creating(counters: Sequence[str], token: bytes) -> bytes:
    """``SET <counter> <token> NX`` of each of *counters*, packed: sent
    ahead of :data:`~.scripts.READ_CLAIMING` on the near cache's
    registered connection, where the server echoes a plain command's
    write to no one (a script's, on Redis 7.0, to everyone)."""
    return b"".join([pack(("SET", key, token, "NX")) for key in counters])


def _storing(writes: Mapping[str, bytes], timeout: Timeout) -> bytes:
    """``SET`` of each of *writes*, packed: sent ahead of
    :data:`~.scripts.WRITE_RELEASING` (given no entries) on the near
    cache's registered connection, as :func:`_creating` is."""
    px = _px(timeout)
    expiry: tuple[Arg, ...] = () if px is None else ("PX", px)
    return b"".join(
        [pack(("SET", key, value, *expiry)) for key, value in writes.items()]
    )


def _writing(
    writes: Mapping[str, bytes],
    timeout: Timeout,
    locks: Sequence[str],
    token: bytes,
) -> tuple[list[str], list[Any]]:
    """The keys and arguments of :data:`~.scripts.WRITE_RELEASING`."""
    px = _px(timeout)
    options = [len(writes), "" if px is None else px, token]
    return [*writes, *locks], [*options, *writes.values()]
