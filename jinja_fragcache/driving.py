"""The drivers of a flow, and the backend calls behind the breaker.

A flow (:mod:`.flow`) is a generator that yields what it needs done: a
backend operation, a render, filling a stored body's holes, a sleep.
:class:`Driving` carries each one out, synchronously (``_drive``) or in an
event loop (``_adrive``), and sends the result back; a backend call goes
through the circuit breaker and fails open (``_call``, ``_acall``).
:class:`~jinja_fragcache.cache.FragmentCache` is a :class:`Driving`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from . import filling, holes
from .backends.base import Backend, made, request_errors
from .breaker import CircuitBreaker
from .flow import FAILED, Gen, Op, Rendered
from .render_state import RenderState, current
from .stats import FragmentStats

if TYPE_CHECKING:
    from .cache import FragmentCache

logger = logging.getLogger("jinja_fragcache")

#: Errors that come from a request's own arguments, whatever the backend.
_REQUEST_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, OverflowError)


class Driving:
    """What a flow's driver needs of the fragment cache it drives for."""

    backend: Backend
    breaker: CircuitBreaker
    fail_open: bool
    statistics: FragmentStats

    def _drive(
        self, flow: Gen, name: str, render: Callable[[int], str] | None = None
    ) -> Any:
        try:
            op = next(flow)
        except StopIteration as stop:  # nothing to do: the first read did it
            return stop.value
        while True:
            kind = op[0]
            try:
                if kind == "render":
                    assert render is not None
                    result: Any = [self._collect(render, i) for i in op[1]]
                elif kind == "open":
                    assert render is not None
                    result = filling.open_stored(
                        cast("FragmentCache", self), op[1], op[2], render, op[3]
                    )
                elif kind == "sleep":
                    time.sleep(op[1])
                    result = None
                else:
                    result = self._call(name, op)
            except BaseException as exc:
                op = flow.throw(exc)  # lets the flow clean up, then re-raises
                continue
            try:
                op = flow.send(result)
            except StopIteration as stop:
                return stop.value

    async def _adrive(
        self,
        flow: Gen,
        name: str,
        render: Callable[[int], Awaitable[str]] | None = None,
    ) -> Any:
        try:
            op = next(flow)
        except StopIteration as stop:  # nothing to do: the first read did it
            return stop.value
        while True:
            kind = op[0]
            try:
                if kind == "render":
                    assert render is not None
                    result: Any = [await self._acollect(render, i) for i in op[1]]
                elif kind == "open":
                    assert render is not None
                    result = await filling.aopen_stored(
                        cast("FragmentCache", self), op[1], op[2], render, op[3]
                    )
                elif kind == "sleep":
                    await asyncio.sleep(op[1])
                    result = None
                else:
                    result = await self._acall(name, op)
            except BaseException as exc:
                op = flow.throw(exc)
                continue
            try:
                op = flow.send(result)
            except StopIteration as stop:
                return stop.value

    def _collect(
        self,
        render: Callable[[int], str],
        index: int,
        live: holes.LiveHoles | None = None,
    ) -> Rendered:
        """Render item *index*, recording what the fragments inside report
        and the ``{% nocache %}`` blocks met (see :meth:`_finish`)."""
        collected: dict[str, str] = {}
        outer, scope = filling.scopes(live)
        token = current.set(made(RenderState, (collected, scope)))
        start = time.perf_counter()
        try:
            body = str(render(index))
        finally:
            current.reset(token)
        seconds = time.perf_counter() - start
        if not scope.met and scope is not holes.OFF:  # most renders: no block met
            return made(Rendered, (body, collected, seconds, None, None, ""))
        done = filling.finished(scope, outer, body, collected, seconds)
        if isinstance(done, holes.Unfilled):
            return self._collect(render, index, holes.OFF)._replace(unfilled=str(done))
        return done

    async def _acollect(
        self,
        render: Callable[[int], Awaitable[str]],
        index: int,
        live: holes.LiveHoles | None = None,
    ) -> Rendered:
        collected: dict[str, str] = {}
        outer, scope = filling.scopes(live)
        token = current.set(made(RenderState, (collected, scope)))
        start = time.perf_counter()
        try:
            body = str(await render(index))
        finally:
            current.reset(token)
        seconds = time.perf_counter() - start
        if not scope.met and scope is not holes.OFF:
            return made(Rendered, (body, collected, seconds, None, None, ""))
        done = filling.finished(scope, outer, body, collected, seconds)
        if isinstance(done, holes.Unfilled):
            again = await self._acollect(render, index, holes.OFF)
            return again._replace(unfilled=str(done))
        return done

    # -- backend calls: fail open behind a circuit breaker -------------------

    def _call(self, name: str, op: Op) -> Any:
        breaker = self.breaker
        if breaker.open_until and not breaker.allow():  # closed: no call
            return FAILED
        try:
            result = getattr(self.backend, op[0])(*op[1:])
        except Exception as exc:
            if not self.fail_open:
                self.statistics.record_error(name)
                raise
            self._failed(name, op, exc)
            return FAILED
        if breaker.open_until:
            breaker.succeeded()
        return result

    async def _acall(self, name: str, op: Op) -> Any:
        breaker = self.breaker
        if breaker.open_until and not breaker.allow():  # closed: no call
            return FAILED
        try:
            result = await getattr(self.backend, "a" + op[0])(*op[1:])
        except Exception as exc:
            if not self.fail_open:
                self.statistics.record_error(name)
                raise
            self._failed(name, op, exc)
            return FAILED
        if breaker.open_until:
            breaker.succeeded()
        return result

    def _failed(self, name: str, op: Op, exc: Exception) -> None:
        self.statistics.record_error(name)
        refused = _REQUEST_ERRORS + request_errors(self.backend)
        # django-redis wraps the client's error: its cause tells.
        if isinstance(exc, refused) or isinstance(exc.__cause__, refused):
            # The server answered, and refused this request's arguments (a
            # value too large, say): this request's error, not an outage,
            # so the breaker stays closed for every other fragment.
            logger.error(
                "fragment cache backend %s refused %s for fragment %r: %s",
                type(self.backend).__name__,
                op[0],
                name,
                exc,
            )
            return
        self.breaker.failed()
        logger.exception(
            "fragment cache backend %s failed in %s for fragment %r; rendering "
            "uncached for the next %.1f s",
            type(self.backend).__name__,
            op[0],
            name,
            self.breaker.cooldown,
        )
