"""The arguments and replies of the server-side scripts
(:mod:`.scripts`), as :class:`~.redis.RedisBackend` sends and reads them:
what its commands carry, packed or not, and what their replies mean.  The
backend itself keeps the connections and the near cache."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from . import scripts
from .base import Claimed, ClaimingRead, Timeout
from .wire import Arg, pack

_READ_CLAIMING_SHA = scripts.sha(scripts.READ_CLAIMING)


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
    return keys, [*options, flags, "", scripts.clock(), token]


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


#: A lookup's first packet without the near cache, packed but for the
#: script's last two arguments (the clock and the token), and the ``MGET``
#: that follows the script.
Judging = tuple[bytes, bytes]


def _judging(read: ClaimingRead, command: str = "EVALSHA") -> tuple[Arg, ...]:
    """:data:`~.scripts.READ_CLAIMING` judging by headers, but for its clock
    and token: the reply goes without the entries (they come by the
    ``MGET`` that follows in the same packet)."""
    entries = read.entries
    script = _READ_CLAIMING_SHA if command == "EVALSHA" else scripts.READ_CLAIMING
    return (
        command,
        script,
        2 * len(entries) + len(read.counters),
        *entries,
        *read.locks,
        *read.counters,
        len(entries),
        1 if read.claim_cold else 0,
        max(1, math.ceil(read.lock_timeout * 1000)),
        "n",
        scripts.HEADER_BYTES - 1,
    )


def _packed_judging(read: ClaimingRead) -> Judging:
    """:func:`_judging` and the ``MGET`` of the entries, packed."""
    return pack(_judging(read), more=2), pack(("MGET", *read.entries))


def _loading(
    read: ClaimingRead, now: bytes, token: bytes
) -> tuple[tuple[Arg, ...], tuple[Arg, ...]]:
    """The first packet's commands, the script sent whole (``EVAL``, which
    loads it): for a server that lacked it."""
    return (*_judging(read, "EVAL"), now, token), ("MGET", *read.entries)


def _judging_with(packed: Judging, now: bytes, token: bytes) -> bytes:
    """The first packet: *packed* with the script's clock and token."""
    script, mget = packed
    tail = b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(now), now, len(token), token)
    return script + tail + mget


def _judged(
    read: ClaimingRead, token: bytes, reply: list[Any], found: list[Any]
) -> Claimed:
    """A :class:`~.base.Claimed` from the script's reply (per entry its
    claim, per counter its value, then nested counters) and what the
    ``MGET`` behind it found of the entries (an empty value is missing)."""
    n = len(read.entries)
    end = n + len(read.counters)
    # A counter that is empty reads as corrupt (lookup.texts), as before.
    values = found if all(found) else [v or None for v in found]
    values += reply[n:end]
    return Claimed(values, reply[:n], _nested(reply, end), token)


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
