"""The arguments and replies of the server-side scripts
(:mod:`.scripts`), as :class:`~.redis.RedisBackend` sends and reads them:
what its commands carry, packed or not, and what their replies mean.  The
backend itself keeps the connections and the near cache."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from . import scripts
from .base import Claimed, ClaimingRead, Timeout, made
from .wire import Arg, pack


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
    return made(Claimed, (values, claims, _nested(reply, end), token)), pttls


def _nested(reply: Sequence[Any], start: int) -> dict[str, bytes | None]:
    """The nested counters that follow the script's reply proper."""
    if len(reply) <= start:
        return {}
    rest = reply[start:]
    return {_key(rest[i]): rest[i + 1] or None for i in range(0, len(rest), 2)}


def _creating(counters: Sequence[str], token: bytes) -> bytes:
    """``SET <counter> <token> NX`` of each of *counters*, packed: sent
    ahead of :data:`~.scripts.READ_CLAIMING` on the near cache's
    registered connection, where the server echoes a plain command's
    write to no one (a script's, on Redis 7.0, to everyone)."""
    return b"".join([pack(("SET", key, token, "NX")) for key in counters])


def _storing(writes: Mapping[str, bytes], timeout: Timeout) -> bytes:
    """``SET`` of each of *writes*, packed: sent ahead of
    :data:`~.scripts.WRITE_RELEASING` (given no entries), so that no entry
    enters Lua; on the near cache's registered connection, which the
    server echoes them to no one, as :func:`_creating`'s."""
    px = _px(timeout)
    expiry: tuple[Arg, ...] = () if px is None else ("PX", px)
    return b"".join(
        [pack(("SET", key, value, *expiry)) for key, value in writes.items()]
    )


def _releasing(locks: Sequence[str], token: bytes) -> tuple[list[str], list[Any]]:
    """The keys and arguments of :data:`~.scripts.WRITE_RELEASING` given no
    entries (they go ahead of it as plain ``SET`` commands, :func:`_storing`): it
    releases each of *locks* still held by *token*.  No entry, so no
    expiry."""
    return list(locks), ["", token]
