"""The near cache's tracking connection and the thread that reads it.

One connection per process, in RESP2: ``CLIENT ID``, then ``SUBSCRIBE
__redis__:invalidate``; the messages are applied, the keys they name handed
to its :class:`~jinja_fragcache.near.NearCache` (``_invalidate``), by
whichever thread gets to them first: a read of the near cache that finds
some waiting (``catch_up``), or a daemon thread, which also PINGs a silent
connection and reconnects when the connection is lost (the near cache is
emptied and bypassed meanwhile).  After each batch the thread rests for
:data:`REST` seconds: a process that renders applies what arrives in its
own reads, and the thread does not wake for every write.

Who registers the tracking (``CLIENT TRACKING on REDIRECT <its id> BCAST
PREFIX <prefix>:`` for every bound prefix) depends on the near cache:

- given a way to make lookup connections (``register``, as
  :class:`~jinja_fragcache.RedisBackend` gives), one of them registers it
  with ``NOLOOP``, and the session lends it to lookups
  (:class:`Registered`): the server sends no message for what that
  connection writes, so a lookup's own writes cost this process nothing
  to read back, and the lookup applies them to the near cache itself.
  Nobody else registers, so losing that connection ends the session as
  losing the tracking connection does.  It must be on the tracking
  connection's server (checked by ``run_id``: client ids are per server);
  when it cannot register there, the tracking connection registers itself;
- otherwise (a cluster's node), the tracking connection registers itself,
  and every write to a tracked key, this process's own included, sends a
  message.

See :mod:`jinja_fragcache.near` for the guarantee this gives.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import select
import ssl
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

#: Seconds the tracking thread rests after applying a batch of messages.
REST = 0.02

#: Bytes asked of the tracking socket at a time.
READ_SIZE = 1 << 16


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


class Registered:
    """The lookup connection that registered a session's tracking with
    ``NOLOOP``: the server sends this process no message for what it
    writes, so whoever writes through it applies the write to the near
    cache itself.

    Lent to one caller at a time (:meth:`take`, :meth:`give_back`).  It is
    the session's only registration: once it is lost no message comes any
    more, so a caller whose command on it failed calls :meth:`lose`, which
    ends the session (the near cache is emptied and bypassed) before the
    connection closes.  An idle connection has nothing to read: when it
    has, the server closed it (:meth:`quiet`).
    """

    def __init__(self, conn: Any) -> None:
        #: The redis-py connection: only the caller that took it may use it.
        self.conn = conn
        self.fd: int = conn._sock.fileno()
        self._readable = select.poll()
        self._readable.register(self.fd, select.POLLIN | select.POLLPRI)
        #: Held by whoever has it; once it is closed, held for good.
        self._held = threading.Lock()
        self._closed = False
        #: How many times it was taken: the thread PINGs it only when this
        #: has not moved for a while.
        self.uses = 0
        #: Ends the session: set by the tracker once the session starts.
        self.ended: Callable[[BaseException], None] = lambda exc: None

    def take(self) -> bool:
        """Whether the caller now holds it: not lent and not closed."""
        if not self._held.acquire(blocking=False):
            return False
        if self._closed:
            self.conn.disconnect()  # and never released
            return False
        self.uses += 1
        return True

    def give_back(self) -> None:
        """Release it; closed now if the session ended meanwhile (whoever
        holds it once it is closed closes it)."""
        self._held.release()
        if self._closed and self._held.acquire(blocking=False):
            self.conn.disconnect()

    def lose(self, exc: BaseException) -> None:
        """Held, and failed: end the session first (nothing would tell the
        near cache of other writes any more), then close it."""
        self.ended(exc)
        self._closed = True
        self.conn.disconnect()

    def close(self) -> None:
        """The session ended: close it now, or when it is given back."""
        self._closed = True
        if self._held.acquire(blocking=False):
            self.conn.disconnect()

    def quiet(self) -> bool:
        """Whether it is idle with nothing to read.  Lent, a reply may be
        arriving: not quiet.  Idle with bytes (or its end) to read: the
        server closed it, and the session ends."""
        if not self.take():
            return False
        try:
            if not self._readable.poll(0):
                return True
            import redis

            self.lose(redis.ConnectionError("the registered connection was closed"))
            return False
        finally:
            self.give_back()

    def ping(self) -> None:
        """PING it unless it is in use (an idle connection may be closed by
        the server's ``timeout``); a failure ends the session.  The thread
        calls it only when it sat unused for :data:`PING_INTERVAL`: a
        lookup that finds it busy takes the echoed way."""
        if not self.take():
            return
        try:
            self.conn.send_command("PING")
            self.conn.read_response()
        except Exception as exc:
            self.lose(exc)
        finally:
            self.give_back()


class Tracker:
    """The tracking thread: connects, enables tracking, applies messages,
    and reconnects when the connection is lost."""

    def __init__(
        self,
        owner: NearCache,
        connect: Callable[[], TrackingConnection],
        register: Callable[[], Any] | None = None,
    ) -> None:
        # A weak reference: a near cache nobody uses any more ends its thread.
        self._owner: weakref.ReferenceType[NearCache] = weakref.ref(owner)
        self._connect = connect
        #: Makes a lookup connection to register the tracking on (NOLOOP).
        self._register = register
        self._stopped = False
        self._restart = False
        #: The session (its messages) that a failed read in another thread
        #: ended: only that one, since the thread may have begun the next.
        self._ended: Messages | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._pipe_open = True
        self._conn: TrackingConnection | None = None
        self._registered: Registered | None = None
        #: Held while messages are read and applied, by either thread.
        self._reading = threading.Lock()
        self._messages: Messages | None = None
        self._pong_due: float | None = None
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
        registered, self._registered = self._registered, None
        # redis-py shuts a socket down only in the process that opened it,
        # so this closes the child's copies and leaves the parent's.
        for made in (conn, registered.conn if registered is not None else None):
            if made is not None:
                with contextlib.suppress(Exception):
                    made.disconnect()
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
                conn, registered = self._open(prefixes)
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
                self._listen(conn, registered)
            except Exception as exc:
                logger.debug("near cache: tracking connection lost (%s)", exc)
            finally:
                owner = self._owner()
                if owner is not None:
                    owner._deactivate()
                del owner
                self._conn = self._messages = self._registered = None
                if registered is not None:
                    registered.close()
                conn.disconnect()

    def _sleep(self, seconds: float) -> None:
        ready, _, _ = select.select([self._wake_r], [], [], seconds)
        if ready:
            os.read(self._wake_r, 4096)

    def _open(
        self, prefixes: tuple[str, ...]
    ) -> tuple[TrackingConnection, Registered | None]:
        import redis

        conn = self._connect()
        registered = None
        try:
            try:
                # connect() names the connection (CLIENT SETNAME) too.
                conn.connect()
                conn.send_command("CLIENT", "ID")
                client_id = int(conn.read_response())
                options: list[str] = ["BCAST"]
                for prefix in prefixes:
                    options += ["PREFIX", prefix]
                if self._register is not None:
                    registered = self._registering(conn, client_id, options)
                if registered is None:
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
            if registered is not None:
                registered.close()
            conn.disconnect()
            raise
        self._conn = conn
        return conn, registered

    def _registering(
        self, conn: TrackingConnection, client_id: int, options: list[str]
    ) -> Registered | None:
        """A lookup connection that registers the tracking for *conn*
        (``REDIRECT`` to it, ``NOLOOP``), on *conn*'s server; ``None`` when
        the server refuses it there or it reached another server (a
        failover between the two connects: client ids are per server, so a
        redirect to another server's client of the same id would succeed).
        A connection error ends the attempt: the session is tried again."""
        import redis

        assert self._register is not None
        link = self._register()
        try:
            conn.send_command("INFO", "server")
            server = _run_id(conn.read_response())
            link.connect()
            link.send_command(
                "CLIENT", "TRACKING", "on", "REDIRECT", client_id, *options, "NOLOOP"
            )
            link.read_response()
            link.send_command("INFO", "server")
            if server is None or _run_id(link.read_response()) != server:
                raise redis.ResponseError("not the tracking connection's server")
            return Registered(link)
        except redis.ResponseError as exc:
            logger.debug("near cache: no NOLOOP registration (%s)", exc)
            link.disconnect()
            return None
        except BaseException:
            link.disconnect()
            raise

    def _listen(self, conn: TrackingConnection, registered: Registered | None) -> None:
        import redis

        sock: Any = conn._sock  # type: ignore[attr-defined]
        fd = sock.fileno()
        owner = self._owner()
        if owner is None:
            return
        self._messages = messages = Messages(conn, sock)
        if registered is not None:
            self._registered = registered
            registered.ended = functools.partial(self._end, messages)
        self._pong_due = None
        # What redis-py read past the SUBSCRIBE reply (messages of writes
        # made before the store is emptied below) is dropped now: left in
        # its buffer, where poll() cannot see it, it would be applied only
        # with the next message to arrive, dropping values read since.
        messages.skip_handshake()
        # Only now, tracking on and subscribed: every read from here on is
        # covered, so the (emptied) store may be used.
        owner._activate(fd, registered, messages)
        del owner
        ping_due = registered_due = time.monotonic() + PING_INTERVAL
        uses = registered.uses if registered is not None else 0
        while not self._stopped and not self._restart and self._ended is not messages:
            now = time.monotonic()
            deadline = self._pong_due if self._pong_due is not None else ping_due
            if registered is not None:
                deadline = min(deadline, registered_due)
            ready, _, _ = select.select(
                [fd, self._wake_r], [], [], max(0.0, deadline - now)
            )
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
            if fd not in ready:
                now = time.monotonic()
                if registered is not None and now >= registered_due:
                    if registered.uses == uses:
                        registered.ping()  # a failure ends the session
                    uses, registered_due = registered.uses, now + PING_INTERVAL
                if self._pong_due is not None and now >= self._pong_due:
                    raise redis.ConnectionError("tracking connection: no PONG")
                if self._pong_due is None and now >= ping_due:
                    conn.send_command("PING")
                    self._pong_due = now + PING_TIMEOUT
                if self._owner() is None:
                    return
                continue
            with self._reading:
                self._apply(messages)
            ping_due = time.monotonic() + PING_INTERVAL
            self._sleep(REST)
        self._restart = False

    def catch_up(self) -> bool:
        """Apply, in the calling thread, the messages the connection holds;
        whether it read until none was waiting.  Does nothing while the
        thread applies some: the near cache is bypassed meanwhile."""
        if not self._reading.acquire(blocking=False):
            return False
        try:
            messages = self._messages
            if messages is not None:
                self._apply(messages)
                return True
        except Exception as exc:
            # The connection is lost or garbled: the thread reconnects.
            self._end(messages, exc)
        finally:
            self._reading.release()
        return False

    def _end(self, messages: Messages | None, exc: BaseException) -> None:
        """End the session of *messages*, from any thread: the near cache
        is emptied and bypassed at once, and the thread begins another.
        Only that session: a restart() would end the thread's next one too,
        if it has seen the loss itself and begun one meanwhile."""
        logger.debug("near cache: tracking session lost (%s)", exc)
        owner = self._owner()
        if owner is not None:
            owner._deactivate(messages)
        del owner
        self._ended = messages
        self._wake()

    def _apply(self, messages: Messages) -> None:
        """Under ``_reading``: read what has arrived and hand it over."""
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
                    self._pong_due = None
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
            owner._invalidate(None if flush else keys, messages.partial)


class Messages:
    """What the tracking connection has received, read without blocking.

    Every write to a tracked key, this process's own included, sends a
    message here.  So the messages are parsed straight from the socket with
    hiredis when it is installed: redis-py's reply machinery costs several
    times as much per message.  What redis-py's own parser still holds past
    the handshake is dropped first (:meth:`skip_handshake`).

    :attr:`partial` tells whether the bytes read end inside a message (the
    rest still on its way): an invalidation not applied yet.
    """

    def __init__(self, conn: TrackingConnection, sock: Any) -> None:
        self._conn = conn
        try:
            import hiredis
        except ImportError:  # pragma: no cover - hiredis comes with [redis]
            self._reader: Any = None
        else:
            self._reader = hiredis.Reader()
        #: Bytes fed to the reader and not yet parsed into a message.
        self._unparsed = 0
        self._readable = select.poll()
        self._readable.register(sock.fileno(), select.POLLIN | select.POLLPRI)
        # A plain socket is read with read(2): its recv() would first
        # poll(2) again for the socket's timeout, on every read of the near
        # cache that finds messages waiting.  TLS bytes need the socket's.
        self._recv: Callable[[int], bytes] = (
            sock.recv
            if isinstance(sock, ssl.SSLSocket)
            else functools.partial(os.read, sock.fileno())
        )

    @property
    def partial(self) -> bool:
        return self._unparsed > 0

    def read(self) -> list[Any]:
        import redis

        if self._reader is None:
            return self._through_redis_py()
        found = []
        # poll() first: whatever the socket's timeout, a read cannot block.
        while self._readable.poll(0):
            data = self._recv(READ_SIZE)
            if not data:
                raise redis.ConnectionError("tracking connection closed by the server")
            self._reader.feed(data)
            self._unparsed += len(data)
            while (message := self._reader.gets()) is not False:
                if isinstance(message, Exception):
                    raise redis.ConnectionError(f"tracking connection: {message}")
                self._unparsed -= _resp_length(message)
                found.append(message)
            if len(data) < READ_SIZE:
                # All that had arrived is read: what comes after is for the
                # next read (no poll(2) more to find it has not come yet).
                break
        return found

    def skip_handshake(self) -> None:
        """Read and drop what redis-py's parser holds past the handshake:
        messages of writes made before the store is used.  From here on,
        every message is read from the socket."""
        self._through_redis_py()

    def _through_redis_py(self) -> list[Any]:
        found = []
        while self._conn.can_read(0):
            found.append(self._conn.read_response())
        return found


def _run_id(info: Any) -> bytes | None:
    """The ``run_id`` an ``INFO server`` reply names: one per server start."""
    if not isinstance(info, bytes):
        return None
    found = re.search(rb"\brun_id:([0-9a-f]+)", info)
    return found.group(1) if found else None


def _resp_length(value: Any) -> int:
    """The bytes of *value* in RESP2, as the server sent it: the messages of
    a subscribed connection are arrays of bulk strings, integers, nulls and
    arrays, whose encoding is canonical."""
    if isinstance(value, bytes):
        return len(value) + len(str(len(value))) + 5  # $<n>\r\n<data>\r\n
    if isinstance(value, list):
        total = len(str(len(value))) + 3  # *<n>\r\n
        for item in value:  # a message's parts are bulk strings, mostly
            if isinstance(item, bytes):
                total += len(item) + len(str(len(item))) + 5
            else:
                total += _resp_length(item)
        return total
    if value is None:
        return 5  # $-1\r\n or *-1\r\n
    if isinstance(value, int):
        return len(str(value)) + 3
    raise TypeError(f"unexpected message part {value!r}")
