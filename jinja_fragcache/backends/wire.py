"""The commands a lookup sends, on connections of the backend's own.

redis-py's ``Redis.execute_command`` costs about 126,000 instructions per
command in redis-py 8 (callgrind, a one-key ``GET``): the pool's locking
and accounting, the retry wrapper, observability hooks, response callbacks
and its argument encoding.  Sending a command the lookup has packed itself,
on a connection it keeps, and reading the reply with the connection's own
parser costs about 26,000.  A miss sends two commands and a hit without the
near cache one, so :class:`Wire` carries exactly those (``FCALL``,
``EVALSHA``, ``MGET``, or a script and an ``MGET`` in one packet);
everything else goes through the client as before.  Of one packet's
replies, those already read whole (behind the first, mostly) are taken
from the connection's hiredis reader straight, without
``read_response()``'s wrapping (about 4,500 instructions a hit less).

Each connection is made like the client's pool makes its own (same class,
same options: TLS, credentials, database, Sentinel), in RESP2, and is used
by one thread at a time: an idle one is taken from a list (``pop`` and
``append`` are atomic) and put back after a whole reply was read.  A
connection that failed is closed, never put back.  A connection error on a
connection that sat idle (a server restarted meanwhile, a failover) closes
every idle one and is tried once more on a new connection, as the client's
retry would; a timeout is not retried.  A forked child starts with none.
:class:`AsyncWire` does the same with asyncio connections, per event loop.

:meth:`Wire.exchange_on` sends on a connection the wire does not own: the
one the near cache lends, which registered its tracking with ``NOLOOP``
(see :mod:`jinja_fragcache.tracking`).  A failure there loses it, which
ends the near cache's session; a lost connection's command is sent once
more on one of the wire's own.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..tracking import Registered

#: One argument of a command, as the lookup gives it.
Arg = str | bytes | int


def pack(args: tuple[Arg, ...], more: int = 0) -> bytes:
    """A command in RESP: ``*<count>`` then each argument as a bulk string.
    Keys are ASCII (:mod:`jinja_fragcache.keys`); values are bytes.  With
    *more*, that many arguments follow, packed by the caller (a command
    whose start is the same on every call is packed once)."""
    # The pieces joined by CRLF, each length from a table: formatting
    # every argument with ``%`` cost a Redis miss's commands about 15,000
    # instructions more (callgrind), a value's bytes copied through it.
    pieces = [b"*%d" % (len(args) + more)]
    heads = _HEADS
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int):
            data = b"%d" % arg
        else:
            data = arg
        size = len(data)
        pieces += (heads[size] if size < _HEADED else b"$%d" % size, data)
    pieces.append(b"")
    return b"\r\n".join(pieces)


#: ``$<length>`` of every length below :data:`_HEADED`: keys and most
#: arguments.
_HEADED = 1024
_HEADS = [b"$%d" % size for size in range(_HEADED)]


class _Links:
    """Idle connections made by *connect*, each for one caller at a time.

    :param connect: makes a new, unconnected redis-py connection.
    :param lost: the exception of a lost connection (redis-py's
        ``ConnectionError``): retried once on a fresh connection.
    :param refused: the exception of an error reply (redis-py's
        ``ResponseError``): the reply was read whole, the connection is
        kept.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        lost: type[Exception],
        refused: type[Exception],
    ) -> None:
        self._connect = connect
        self._lost = lost
        self._refused = refused
        self._idle: list[Any] = []
        _wires.add(self)

    def _forked(self) -> None:
        # The parent's connections stay the parent's: forgotten, not closed
        # (redis-py shuts a socket down only in the process that opened it).
        self._idle = []


#: What :attr:`Wire._nothing` holds until a connection's reader told it.
_UNKNOWN = object()


def _hiredis(link: Any) -> Any:
    """*link*'s hiredis reader, or ``None`` (redis-py's own parser)."""
    return getattr(getattr(link, "_parser", None), "_reader", None)


class Wire(_Links):
    """Commands on redis-py connections, one thread at a time each."""

    #: What a connection's hiredis reader gives back while it holds no
    #: whole reply (redis-py's sentinel, learnt from the first connection).
    _nothing: object = _UNKNOWN

    def call(self, *args: Arg) -> Any:
        """Send one command and return its reply; an error reply raises
        redis-py's exception for it (``NoScriptError``, say)."""
        return self.pipeline(args)[0]

    def pipeline(self, *commands: tuple[Arg, ...]) -> list[Any]:
        """Send *commands* in one packet and return their replies.  Every
        reply is read before an error reply raises (the first one's
        exception): the connection stays in step."""
        return self.exchange(b"".join(map(pack, commands)), len(commands))

    def exchange(self, packed: bytes, count: int) -> list[Any]:
        """Send *packed*, *count* commands already in RESP, in one packet
        and return their replies, as :meth:`pipeline` does."""
        # One bytes object: redis-py writes each chunk it is given apart.
        chunks = [packed]
        try:
            link = self._idle.pop()
        except IndexError:
            return self._call_on(self._new(), chunks, count)
        try:
            return self._call_on(link, chunks, count)
        except self._lost:
            # A connection that sat idle may predate a restart, and so may
            # every other idle one: drop them all and try a new one.
            self.close()
            return self._call_on(self._new(), chunks, count)

    def exchange_on(self, lent: Registered, packed: bytes, count: int) -> list[Any]:
        """:meth:`exchange` on *lent*, the near cache's registered
        connection, which the wire does not keep (the caller gives it
        back).  A failure but an error reply loses it, which ends its
        tracking session; a lost connection is tried once more on one of
        the wire's own, as an idle connection of the wire's would be."""
        try:
            replies, refused = self._replies(lent.conn, [packed], count)
        except self._lost as exc:
            lent.lose(exc)
            return self.exchange(packed, count)
        except BaseException as exc:
            lent.lose(exc)
            raise
        if refused is not None:
            raise refused
        return replies

    def _new(self) -> Any:
        # connect() itself, as the pool does: sending on an unconnected
        # connection would connect it to its default address, bypassing
        # a Sentinel-managed connection's own connect().
        link = self._connect()
        link.connect()
        if self._nothing is _UNKNOWN and _hiredis(link) is not None:
            # What the parser's reader gives while no whole reply is in:
            # it has just read the handshake's replies, so nothing now.
            self._nothing = _hiredis(link).gets()
        return link

    def _call_on(self, link: Any, packed: list[bytes], count: int) -> list[Any]:
        try:
            replies, refused = self._replies(link, packed, count)
        except BaseException:
            link.disconnect()
            raise
        self._idle.append(link)
        if refused is not None:
            raise refused
        return replies

    def _replies(
        self, link: Any, packed: list[bytes], count: int
    ) -> tuple[list[Any], Exception | None]:
        """Send *packed* on *link* and read *count* replies, and the first
        error reply's exception (every reply is read: *link* stays in
        step).  Any other failure raises, *link* in no known state."""
        replies, refused = [], None
        link.send_packed_command(packed, False)
        # A reply already read from the socket whole (those behind the
        # first, mostly: one packet brings them all) is taken from the
        # parser's hiredis reader straight: read_response() costs about
        # 7,000 instructions a reply in redis-py 8, its wrapping included.
        nothing = self._nothing
        reader = None if nothing is _UNKNOWN else _hiredis(link)
        for _ in range(count):
            reply = nothing if reader is None else reader.gets()
            if reply is nothing:
                try:
                    reply = link.read_response()
                except self._refused as exc:
                    reply = exc
            if isinstance(reply, Exception):
                if not isinstance(reply, self._refused):
                    raise reply  # what read_response() raises (a lost link)
                refused = refused or reply
            replies.append(reply)
        return replies, refused

    def close(self) -> None:
        """Close every idle connection (one in use closes when it fails)."""
        while self._idle:
            try:
                link = self._idle.pop()
            except IndexError:
                return
            link.disconnect()


class AsyncWire(_Links):
    """:class:`Wire` for asyncio: redis-py's asyncio connections, of one
    event loop (a backend keeps one per loop).  A task cancelled while it
    waits for a reply closes that connection: its reply would be the next
    task's."""

    async def call(self, *args: Arg) -> Any:
        """:meth:`Wire.call`, awaited."""
        return (await self.pipeline(args))[0]

    async def pipeline(self, *commands: tuple[Arg, ...]) -> list[Any]:
        """:meth:`Wire.pipeline`, awaited."""
        return await self.exchange(b"".join(map(pack, commands)), len(commands))

    async def exchange(self, packed: bytes, count: int) -> list[Any]:
        """:meth:`Wire.exchange`, awaited."""
        chunks = [packed]
        try:
            link = self._idle.pop()
        except IndexError:
            return await self._call_on(await self._new(), chunks, count)
        try:
            return await self._call_on(link, chunks, count)
        except self._lost:
            await self.aclose()
            return await self._call_on(await self._new(), chunks, count)

    async def _new(self) -> Any:
        link = self._connect()
        await link.connect()
        return link

    async def _call_on(self, link: Any, packed: list[bytes], count: int) -> list[Any]:
        replies, refused = [], None
        try:
            await link.send_packed_command(packed, False)
            for _ in range(count):
                try:
                    replies.append(await link.read_response())
                except self._refused as exc:
                    refused = refused or exc
                    replies.append(exc)
        except BaseException:
            await link.disconnect(nowait=True)
            raise
        self._idle.append(link)
        if refused is not None:
            raise refused
        return replies

    async def aclose(self) -> None:
        """Close every idle connection."""
        while self._idle:
            await self._idle.pop().disconnect()


_wires: weakref.WeakSet[_Links] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for wire in list(_wires):
        wire._forked()


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)
