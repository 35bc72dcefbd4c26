"""A circuit breaker, so a dead backend costs one failed call per window."""

from __future__ import annotations

import threading
import time


class CircuitBreaker:
    """Open for *cooldown* seconds after a failure, then let one call probe.

    While open, :meth:`allow` is false and callers skip the backend entirely.
    After the cooldown exactly one caller is let through; its success closes
    the breaker, its failure opens it for another window.
    """

    def __init__(self, cooldown: float = 5.0) -> None:
        self.cooldown = cooldown
        #: When the breaker lets a probe through; ``0.0`` while it is
        #: closed, which a caller on a hot path may test before calling
        #: :meth:`allow` or :meth:`succeeded` (both no-ops then).
        self.open_until = 0.0
        self._probing = False
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self.open_until > 0.0

    def allow(self) -> bool:
        if not self.open_until:  # closed: the hot path takes no lock
            return True
        with self._lock:
            if self._probing or time.monotonic() < self.open_until:
                return False
            self._probing = True
            return True

    def succeeded(self) -> None:
        if self.open_until:
            with self._lock:
                self.open_until = 0.0
                self._probing = False

    def failed(self) -> None:
        with self._lock:
            self.open_until = time.monotonic() + self.cooldown
            self._probing = False
