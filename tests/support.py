"""Test helpers: rendering both ways, and backends that count or fail."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar

from jinja2 import Template

from jinja_fragcache.backends.base import Timeout

T = TypeVar("T")


def render(template: Template, **context: Any) -> str:
    """Render sync or async, as the template's environment is set up."""
    if template.environment.is_async:
        cache = getattr(template.environment, "fragment_cache", None)
        return run(template.render_async(**context), getattr(cache, "backend", None))
    return template.render(**context)


def run(coroutine: Awaitable[T], *backends: Any) -> T:
    """``asyncio.run``, then close what the backends opened for that loop.

    Each ``asyncio.run`` is a new event loop, and an asyncio Redis client
    belongs to one loop; a long-lived application closes it at shutdown.
    """

    async def main() -> T:
        try:
            return await coroutine
        finally:
            for backend in backends:
                while backend is not None and not hasattr(backend, "aclose"):
                    backend = getattr(backend, "inner", None)
                if backend is not None:
                    await backend.aclose()

    return asyncio.run(main())


SYNC_METHODS = ("get_many", "set", "set_many", "add", "add_many", "delete", "incr")
ASYNC_METHODS = {"a" + name: name for name in SYNC_METHODS}


class CountingBackend:
    """Wraps a real backend and counts the calls that reach it.

    Async calls count under their sync name, so a test reads the same
    numbers whichever way the template rendered.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.called_async: Counter[bool] = Counter()  # True: an a… method
        self.keys_read: list[list[str]] = []

    def reset(self) -> None:
        self.calls.clear()
        self.called_async.clear()
        self.keys_read.clear()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if name not in SYNC_METHODS and name not in ASYNC_METHODS:
            return method  # close(), aclose(), info(): not cache traffic
        sync_name = ASYNC_METHODS.get(name, name)

        def counted(*args: Any) -> Any:
            self.calls[sync_name] += 1
            self.called_async[name in ASYNC_METHODS] += 1
            if sync_name == "get_many":
                self.keys_read.append(list(args[0]))
            return method(*args)

        return counted


class BrokenBackend:
    """A backend whose server is unreachable: every call raises."""

    def __init__(self) -> None:
        self.attempts = 0
        self.broken = True
        self.inner: Any = None

    def _fail(self) -> None:
        # ``broken = False`` with an ``inner`` backend: the server came back.
        self.attempts += 1
        if self.broken:
            raise ConnectionError("connection refused")

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any) -> Any:
            self._fail()
            return getattr(self.inner, name)(*args)

        async def acall(*args: Any) -> Any:
            self._fail()
            return await getattr(self.inner, name)(*args)

        return acall if name in ASYNC_METHODS else call


def free_port() -> int:
    """A TCP port on loopback that nothing listens on (for now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def entries(backend: Any, keys: Sequence[str]) -> Mapping[str, bytes | None]:
    return dict(zip(keys, backend.get_many(list(keys)), strict=True))


__all__ = [
    "BrokenBackend",
    "CountingBackend",
    "Timeout",
    "entries",
    "free_port",
    "render",
    "run",
]
