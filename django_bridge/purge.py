"""Purging the edge after an invalidation.

The bridge's cache calls :class:`AfterInvalidation` as its
``on_invalidated`` hook: with the version counters an invalidation bumped,
once the bump is stored, never before (a purge that came first would let
the edge fetch the page again from a backend still serving the old
fragment, and keep it).  It turns the counters into surrogate keys
(:func:`jinja_fragcache.surrogates.purge_keys`), sends
:data:`~django_bridge.signals.surrogate_keys_invalidated`, and, with
``FRAGCACHE["PURGE"] = {"BACKEND": "varnish", "URLS": [...]}``, purges
them from every Varnish listed.

Purges never fail or block a request: a background thread sends them.
One that fails (Varnish down, refused, a timeout) is logged, counted as an
error of ``"(purges)"`` in the statistics, and kept in this process to be
sent again every ``RETRY_INTERVAL`` seconds, as a failed invalidation is
(:class:`jinja_fragcache.invalidation.PendingBumps`).  A process that dies
with purges still queued loses them; the error log names them.
"""

from __future__ import annotations

import http.client
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Iterator
from urllib.parse import urlsplit

from jinja_fragcache.invalidation import PendingBumps
from jinja_fragcache.stats import FragmentStats
from jinja_fragcache.surrogates import purge_keys

from .conf import PurgeSettings, settings
from .signals import surrogate_keys_invalidated

logger = logging.getLogger("django_bridge")

#: Failed purges are counted as errors of this name in the statistics.
PURGES = "(purges)"

#: The longest ``xkey-purge`` header one PURGE carries: well under
#: Varnish's ``http_req_hdr_len`` (8 KB by default).
MAX_PURGE_HEADER = 4000


class AfterInvalidation:
    """The ``on_invalidated`` hook of the bridge's cache.

    :param statistics: where failed purges are counted (the cache's).
    """

    def __init__(self, statistics: FragmentStats | None = None) -> None:
        self.statistics = statistics
        self._purgers: dict[PurgeSettings, VarnishPurger] = {}
        self._lock = threading.Lock()

    def __call__(self, counters: list[str]) -> None:
        keys = purge_keys(counters)
        _announce(keys, counters)
        config = settings.purge  # at call time: override_settings works
        if config is not None:
            self.purger(config).purge(keys)

    def purger(self, config: PurgeSettings) -> VarnishPurger:
        """The purger of *config*, one per configuration, kept with its queue."""
        with self._lock:
            purger = self._purgers.get(config)
            if purger is None:
                purger = self._purgers[config] = VarnishPurger(
                    config.urls,
                    timeout=config.timeout,
                    retry_interval=config.retry_interval,
                    statistics=self.statistics,
                )
        return purger


def _announce(keys: list[str], counters: list[str]) -> None:
    sent = surrogate_keys_invalidated.send_robust(
        sender=AfterInvalidation, keys=keys, counters=counters
    )
    for receiver, result in sent:
        if isinstance(result, Exception):
            logger.error(
                "surrogate_keys_invalidated receiver %r failed for %s",
                receiver,
                " ".join(keys),
                exc_info=result,
            )


#: Every purger alive, for :func:`flush`.
_purgers: weakref.WeakSet[VarnishPurger] = weakref.WeakSet()


class VarnishPurger:
    """Sends ``PURGE`` requests with an ``xkey-purge`` header to Varnish
    (see ``examples/varnish/default.vcl``), from a background thread.

    :param urls: where each purge goes, every one of them.
    :param timeout: seconds a Varnish has to answer one purge.
    :param retry_interval: seconds between two tries of failed purges.
    :param statistics: where failed purges are counted.
    """

    def __init__(
        self,
        urls: tuple[str, ...],
        *,
        timeout: float = 2.0,
        retry_interval: float = 5.0,
        statistics: FragmentStats | None = None,
    ) -> None:
        self.urls = urls
        self.timeout = timeout
        self.statistics = statistics
        #: Failed purges of this process, all tries counted.
        self.errors = 0
        #: Purges that failed, to send again: ``"<url> <key>"`` each.
        self.retries = PendingBumps(self._resend, lambda: retry_interval)
        self._jobs: deque[list[str]] = deque()
        self._busy = False
        self._done = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        _purgers.add(self)

    def purge(self, keys: list[str]) -> None:
        """Purge *keys* from every Varnish, soon; never raises, never waits."""
        if not keys:
            return
        with self._done:
            self._jobs.append(keys)
            alive = self._thread is not None and self._thread.is_alive()
            if alive and self._pid == os.getpid():
                return
            # One thread, started when there is work and gone when there
            # is none; a forked child starts its own.
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._work, name="django-bridge-purges", daemon=True
            )
            self._thread.start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every purge asked for so far was tried once (sent, or
        failed and queued); false if *timeout* seconds passed first."""
        with self._done:
            return self._done.wait_for(
                lambda: not self._jobs and not self._busy, timeout
            )

    @property
    def pending(self) -> int:
        """Purges (of one key at one URL) that failed and wait for a retry."""
        return len(self.retries)

    def _work(self) -> None:
        while True:
            with self._done:
                if not self._jobs:
                    self._thread = None
                    return
                keys = self._jobs.popleft()
                self._busy = True
            try:
                failed = self._send(
                    [f"{url} {key}" for url in self.urls for key in keys], retry=False
                )
                if failed:
                    self.retries.add_failed(failed)
            finally:
                with self._done:
                    self._busy = False
                    self._done.notify_all()

    def _resend(self, items: list[str]) -> list[str]:
        return self._send(items, retry=True)

    def _send(self, items: list[str], *, retry: bool) -> list[str]:
        """Send the purges *items* (``"<url> <key>"``); return those that failed."""
        by_url: dict[str, list[str]] = {}
        for item in items:
            url, key = item.split(" ", 1)
            by_url.setdefault(url, []).append(key)
        failed: list[str] = []
        for url, keys in by_url.items():
            for batch in _batches(keys):
                error = self._purge_one(url, batch)
                if error is not None:
                    failed.extend(f"{url} {key}" for key in batch)
                    self._record_failure(url, batch, error, retry=retry)
        return failed

    def _purge_one(self, url: str, keys: list[str]) -> str | None:
        """One ``PURGE``; the reason it failed, or ``None``."""
        parts = urlsplit(url)
        kind = (
            http.client.HTTPSConnection
            if parts.scheme == "https"
            else http.client.HTTPConnection
        )
        connection = kind(parts.hostname or "", parts.port, timeout=self.timeout)
        try:
            connection.request(
                "PURGE", parts.path or "/", headers={"xkey-purge": " ".join(keys)}
            )
            response = connection.getresponse()
            response.read()
        except Exception as error:  # whatever went wrong, the purge is kept
            return f"{type(error).__name__}: {error}"
        finally:
            connection.close()
        if not 200 <= response.status < 300:
            return f"status {response.status} {response.reason}"
        return None

    def _record_failure(
        self, url: str, keys: list[str], error: str, *, retry: bool
    ) -> None:
        with self._done:
            self.errors += 1
        if self.statistics is not None:
            self.statistics.record_error(PURGES)
        logger.log(
            logging.WARNING if retry else logging.ERROR,
            "purge of %d surrogate key(s) at %s failed (%s); kept in this process "
            "and sent again later: %s",
            len(keys),
            url,
            error,
            " ".join(keys),
        )


def _batches(keys: list[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for key in keys:
        if batch and size + len(key) + 1 > MAX_PURGE_HEADER:
            yield batch
            batch, size = [], 0
        batch.append(key)
        size += len(key) + 1
    if batch:
        yield batch


def flush(timeout: float = 10.0) -> bool:
    """Wait until every purge asked for so far in this process was tried
    once; for tests, and for scripts that exit after invalidating."""
    return all(purger.flush(timeout) for purger in list(_purgers))


def pending() -> int:
    """Failed purges of this process waiting for a retry."""
    return sum(purger.pending for purger in list(_purgers))
