"""Invalidation: the bump of version counters (:func:`bump_flow`), and the
bumps that must not be lost: those that failed, and those made again later.

An invalidation is a bump of one or more version counters.  When the
backend is down (or the breaker is open) the bump cannot be made; dropping
it would leave a fragment with no timeout stale for good.  So a failed bump
is kept here, in this process, and made again:

- before the first read once the backend answers (the cache replays the
  queue before a lookup, and renders uncached while it cannot), and
- by a background thread that retries every breaker cooldown, so other
  processes see it even when this one renders nothing.

A *delayed* bump (``again_after=``) closes the read-before-invalidate race:
a request that loaded its data before another request saved and
invalidated would otherwise store that old data under the new versions.
Bumping again a few seconds later clears what it stored.

Bumping a counter twice is harmless (it only invalidates again), so the
queue needs no coordination with the render path beyond a lock on its own
state.  A process that dies with bumps still queued loses them; the error
log says which.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from .flow import FAILED, Gen, new_version


def bump_flow(counters: Sequence[str], together: bool = False) -> Gen:
    """Bump each counter; return those that could not be bumped.  With
    *together* (a backend with ``incr_many``), the counters that exist are
    bumped in one call and the missing ones created in one more."""
    if together and len(counters) > 1:
        bumped_all = yield ("incr_many", list(counters), 1)
        if bumped_all is FAILED:
            return list(counters)
        missing = [c for c, v in zip(counters, bumped_all, strict=True) if v is None]
        if not missing:
            return []
        created = yield ("add_many", {c: new_version() for c in missing}, None)
        if created is FAILED:
            return missing
        # Those created meanwhile by someone else are bumped one by one.
        counters = [c for c, ok in zip(missing, created, strict=True) if not ok]
    for index, counter in enumerate(counters):
        bumped = yield ("incr", counter, 1)
        if bumped is None:
            # Never create a counter at a predictable value: a fresh random
            # one invalidates just as well.
            created = yield ("add", counter, new_version(), None)
            if created is False:  # created meanwhile by someone else
                bumped = yield ("incr", counter, 1)
            else:
                bumped = created
        if bumped is FAILED:
            return list(counters[index:])
    return []


def delete_flow(key: str) -> Gen:
    yield ("delete", key)


class PendingBumps:
    """Counter keys still to bump: failed ones, and delayed ones with a due time.

    :param bump: makes the bumps; returns the counters it could *not* bump.
    :param retry_interval: seconds between retries of failed bumps.
    """

    def __init__(
        self,
        bump: Callable[[list[str]], list[str]],
        retry_interval: Callable[[], float],
    ) -> None:
        self._bump = bump
        self._retry_interval = retry_interval
        self._failed: dict[str, None] = {}
        #: Whether failed bumps wait: reads must not come before them.  An
        #: attribute, not a property: every remembered hit reads it.
        self.has_failed = False
        self._due: dict[str, float] = {}
        #: Failed bumps a replay is making now (see :meth:`take`).
        self._taken: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def __len__(self) -> int:
        with self._lock:
            return len(self._failed.keys() | self._due.keys())

    def add_failed(self, counters: Iterable[str]) -> None:
        with self._lock:
            self._failed.update(dict.fromkeys(counters))
            self.has_failed = bool(self._failed)
        self._run()

    def add_later(self, counters: Iterable[str], delay: float) -> None:
        due = time.monotonic() + delay
        with self._lock:
            for counter in counters:
                self._due[counter] = max(due, self._due.get(counter, 0.0))
        self._run()

    def take(self) -> list[str]:
        """The failed bumps to make now, held by the caller until it
        settles them (:meth:`settle`): a replay running meanwhile (the queue's
        thread, a lookup in another thread or task) does not make them a
        second time.  They stay failed, so reads still wait for them."""
        with self._lock:
            counters = [k for k in self._failed if k not in self._taken]
            self._taken.update(counters)
            return counters

    def settle(self, tried: Iterable[str], left: Iterable[str]) -> bool:
        """Forget the bumps of *tried* (from :meth:`take`) that are not
        *left*; true when no failed bump remains."""
        kept = set(left)
        with self._lock:
            for counter in tried:
                self._taken.discard(counter)
                if counter not in kept:
                    self._failed.pop(counter, None)
            self.has_failed = bool(self._failed)
            return not self._failed

    def replay(self) -> bool:
        """Make the failed bumps now; true when none is left."""
        counters = self.take()
        if not counters:  # none, or all being made by another replay
            return not self.has_failed
        left = counters
        try:
            left = self._bump(counters)
        finally:
            done = self.settle(counters, left)
        return done

    def _fire_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [k for k, when in self._due.items() if when <= now]
            for counter in due:
                del self._due[counter]
        if due:
            left = self._bump(due)
            if left:
                self.add_failed(left)

    def _next_wait(self) -> float | None:
        with self._lock:
            if self._failed:
                waits = [self._retry_interval()]
            elif not self._due:
                return None
            else:
                waits = []
            if self._due:
                waits.append(min(self._due.values()) - time.monotonic())
        return max(0.01, min(waits))

    def _run(self) -> None:
        # One daemon thread per queue, started when there is work and gone
        # when there is none; a forked child starts its own.
        self._wake.set()
        with self._lock:
            alive = self._thread is not None and self._thread.is_alive()
            if alive and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._loop, name="jinja-fragcache-invalidations", daemon=True
            )
            self._thread.start()

    def _loop(self) -> None:
        while True:
            wait = self._next_wait()
            if wait is None:
                with self._lock:
                    if not self._failed and not self._due:
                        self._thread = None
                        return
                continue
            self._wake.clear()
            self._wake.wait(wait)
            try:
                self._fire_due()
                if self._failed:
                    self.replay()
            except Exception:  # noqa: S110 - the bump logs its own failures
                pass
