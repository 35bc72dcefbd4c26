"""The near cache's tracking connection and the thread that reads it.

One connection per process, in RESP2: ``CLIENT ID``, then ``CLIENT TRACKING
on REDIRECT <its own id> BCAST PREFIX <prefix>:`` for every bound prefix,
then ``SUBSCRIBE __redis__:invalidate``.  A daemon thread reads the
messages and hands the keys they name to its
:class:`~jinja_fragcache.near.NearCache` (``_invalidate``), PINGs a silent
connection, and reconnects when the connection is lost (the near cache is
emptied and bypassed meanwhile).  See :mod:`jinja_fragcache.near` for the
guarantee this gives.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .near import NearCache

logger = logging.getLogger("jinja_fragcache")

_CHANNEL = b"__redis__:invalidate"

#: Seconds of silence on the tracking connection before it is PINGed, and
#: seconds the PING has to be answered before the connection counts as lost.
PING_INTERVAL = 5.0
PING_TIMEOUT = 2.0


class TrackingConnection(Protocol):
    """What the tracking thread needs of a connection: redis-py's
    ``Connection``, made with ``protocol=2``."""

    def connect(self) -> None: ...

    def send_command(self, *args: Any, **kwargs: Any) -> None: ...

    def read_response(self, *args: Any, **kwargs: Any) -> Any: ...

    def can_read(self, timeout: float = 0) -> bool: ...

    def disconnect(self, *args: Any) -> None: ...


class RefusedError(Exception):
    """The server answered, and will not track: no near cache."""


class Tracker:
    """The tracking thread: connects, enables tracking, applies messages,
    and reconnects when the connection is lost."""

    def __init__(
        self, owner: NearCache, connect: Callable[[], TrackingConnection]
    ) -> None:
        # A weak reference: a near cache nobody uses any more ends its thread.
        self._owner: weakref.ReferenceType[NearCache] = weakref.ref(owner)
        self._connect = connect
        self._stopped = False
        self._restart = False
        self._wake_r, self._wake_w = os.pipe()
        self._pipe_open = True
        self._conn: TrackingConnection | None = None
        self._thread = threading.Thread(
            target=self._run, name="jinja-fragcache-near-cache", daemon=True
        )
        weakref.finalize(owner, self.stop)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped = True
        self._wake()
        if threading.current_thread() is self._thread:
            return  # the finalizer, run by the thread itself: it ends anyway
        if self._thread.is_alive():
            self._thread.join(2)
        if not self._thread.is_alive():
            self._close_pipe()

    def _close_pipe(self) -> None:
        if self._pipe_open:
            self._pipe_open = False
            os.close(self._wake_r)
            os.close(self._wake_w)

    def restart(self) -> None:
        self._restart = True
        self._wake()

    def abandon(self) -> None:
        """In a forked child: forget the parent's thread and sockets."""
        self._stopped = True
        conn, self._conn = self._conn, None
        if conn is not None:
            # redis-py shuts a socket down only in the process that opened
            # it, so this closes the child's copy and leaves the parent's.
            with contextlib.suppress(Exception):
                conn.disconnect()
        self._close_pipe()

    def _wake(self) -> None:
        if self._pipe_open:
            with contextlib.suppress(OSError):  # full: awake already
                os.write(self._wake_w, b"x")

    def _run(self) -> None:
        backoff = 0.05
        while not self._stopped:
            owner = self._owner()
            if owner is None:
                return
            prefixes = owner.prefixes
            del owner
            try:
                conn = self._open(prefixes)
            except RefusedError as exc:
                owner = self._owner()
                if owner is not None:
                    owner._refuse(exc)
                return
            except Exception as exc:
                logger.debug("near cache: cannot track yet (%s)", exc)
                self._sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            try:
                self._listen(conn)
            except Exception as exc:
                logger.debug("near cache: tracking connection lost (%s)", exc)
            finally:
                owner = self._owner()
                if owner is not None:
                    owner._deactivate()
                del owner
                self._conn = None
                conn.disconnect()

    def _sleep(self, seconds: float) -> None:
        ready, _, _ = select.select([self._wake_r], [], [], seconds)
        if ready:
            os.read(self._wake_r, 4096)

    def _open(self, prefixes: tuple[str, ...]) -> TrackingConnection:
        import redis

        conn = self._connect()
        try:
            try:
                # connect() names the connection (CLIENT SETNAME) too.
                conn.connect()
                conn.send_command("CLIENT", "ID")
                client_id = int(conn.read_response())
                options: list[str] = ["BCAST"]
                for prefix in prefixes:
                    options += ["PREFIX", prefix]
                conn.send_command(
                    "CLIENT", "TRACKING", "on", "REDIRECT", client_id, *options
                )
                conn.read_response()
            except redis.ResponseError as exc:
                raise RefusedError(str(exc)) from exc
            conn.send_command("SUBSCRIBE", _CHANNEL)
            reply = conn.read_response()
            if not (isinstance(reply, list) and reply[0] == b"subscribe"):
                raise redis.ConnectionError(f"unexpected SUBSCRIBE reply {reply!r}")
        except BaseException:
            conn.disconnect()
            raise
        self._conn = conn
        return conn

    def _listen(self, conn: TrackingConnection) -> None:
        import redis

        sock: Any = conn._sock  # type: ignore[attr-defined]
        fd = sock.fileno()
        owner = self._owner()
        if owner is None:
            return
        # Only now, tracking on and subscribed: every read from here on is
        # covered, so the (emptied) store may be used.
        owner._activate(fd)
        del owner
        messages = Messages(conn, sock)
        ping_due = time.monotonic() + PING_INTERVAL
        pong_due: float | None = None
        while not self._stopped and not self._restart:
            now = time.monotonic()
            deadline = pong_due if pong_due is not None else ping_due
            ready, _, _ = select.select(
                [fd, self._wake_r], [], [], max(0.0, deadline - now)
            )
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
            if fd not in ready:
                now = time.monotonic()
                if pong_due is not None and now >= pong_due:
                    raise redis.ConnectionError("tracking connection: no PONG")
                if pong_due is None and now >= ping_due:
                    conn.send_command("PING")
                    pong_due = now + PING_TIMEOUT
                if self._owner() is None:
                    return
                continue
            owner = self._owner()
            if owner is None:
                return
            owner._begin_processing()
            keys: list[str] | None = []
            flush = False
            try:
                for message in messages.read():
                    kind = message[0] if isinstance(message, list) else None
                    if kind == b"pong":
                        pong_due = None
                    elif kind == b"message" and message[1] == _CHANNEL:
                        payload = message[2]
                        if payload is None:
                            flush = True
                        else:
                            assert keys is not None
                            keys += [
                                k.decode() if isinstance(k, bytes) else str(k)
                                for k in payload
                            ]
            finally:
                owner._invalidate(None if flush else keys)
                del owner
            ping_due = time.monotonic() + PING_INTERVAL
        self._restart = False


class Messages:
    """What the tracking connection received, once its socket is readable.

    Every write to a tracked key, this process's own included, sends a
    message here, and each wakes the tracking thread, which holds the GIL
    while it reads.  So the messages are parsed straight from the socket
    with hiredis when it is installed: redis-py's reply machinery costs
    several times as much per message.  What redis-py's own parser still
    holds from the handshake is read through it first.
    """

    def __init__(self, conn: TrackingConnection, sock: Any) -> None:
        self._conn, self._sock = conn, sock
        try:
            import hiredis
        except ImportError:  # pragma: no cover - hiredis comes with [redis]
            self._reader: Any = None
        else:
            self._reader = hiredis.Reader()
        self._handed_over = self._reader is None

    def read(self) -> list[Any]:
        import redis

        if not self._handed_over:
            self._handed_over = self._reader is not None
            return self._through_redis_py()
        if self._reader is None:
            return self._through_redis_py()
        data = self._sock.recv(1 << 16)
        if not data:
            raise redis.ConnectionError("tracking connection closed by the server")
        self._reader.feed(data)
        found = []
        while (message := self._reader.gets()) is not False:
            if isinstance(message, Exception):
                raise redis.ConnectionError(f"tracking connection: {message}")
            found.append(message)
        return found

    def _through_redis_py(self) -> list[Any]:
        found = []
        while self._conn.can_read(0):
            found.append(self._conn.read_response())
        return found
