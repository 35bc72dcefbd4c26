"""What the compiled tags call when a template renders.

:class:`~jinja_fragcache.ext.FragmentCacheExtension` compiles each tag to
calls of these methods (see its ``parse``): a hit is ``_lookup_fragment``
(or ``_lookup_each``) and an output; the other branch renders the body
through ``_finish_fragment`` (``_finish_each``).  A fragment with holes is
one call, ``_cache_fragment`` (``_cache_each``), since a hit needs its
caller too.  Every lookup goes through
:class:`~jinja_fragcache.cache.FragmentCache`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any, NamedTuple

from jinja2 import pass_context
from jinja2.environment import Environment
from jinja2.exceptions import TemplateRuntimeError
from jinja2.runtime import Context
from markupsafe import Markup

from . import filling, holes
from .api import get_default_cache
from .backends.base import made
from .cache import FragmentCache, FragmentRequest, build_requests
from .holes import HoleTable
from .lookup import Pending
from .memo import Remembered, memo_key, strings_of
from .render_state import RenderState, current
from .requests import where

Caller = Callable[..., Any]


def cache_of(environment: Environment) -> FragmentCache:
    """The cache *environment* renders with, read on every use.

    ``environment.fragment_cache`` is a :class:`FragmentCache`, a callable
    returning one (read at every render, as Django reads its settings), or
    ``None`` for the process default.
    """
    configured = environment.fragment_cache  # type: ignore[attr-defined]
    if type(configured) is FragmentCache:  # set as it is: every render's path
        return configured
    if callable(configured):
        configured = configured()
    return configured or get_default_cache()


class TagRuntime:
    """The render-time half of the extension."""

    environment: Environment

    @property
    def cache(self) -> FragmentCache:
        raise NotImplementedError

    def _requests(
        self,
        cache: FragmentCache,
        context: Context,
        lineno: int,
        name: str,
        digest: str,
        timeout: object,
        tags: object,
        varies: Iterable[Iterable[object]],
        table: HoleTable | None,
        key: Hashable = None,
    ) -> list[FragmentRequest]:
        """One request per variant; errors name the template and the line.
        With the memo *key* of one variant, its strings are the key's."""
        try:
            return build_requests(
                name,
                varies,
                timeout=timeout,
                tags=tags,
                template=context.name or "",
                digest=digest,
                context=context,
                holes=table,
                line=lineno,
                identity=cache.identity,
                debug=cache.debug,
                strings=None if key is None else strings_of(key),
            )
        except ValueError as exc:
            raise TemplateRuntimeError(f"{exc} ({_where(context, lineno)})") from None

    @pass_context
    def _lookup_fragment(
        self,
        context: Context,
        lineno: int,
        name: str,
        digest: str,
        timeout: object,
        tags: object,
        condition: object,
        vary: list[object],
    ) -> Any:
        """The output of a fresh, whole hit; else the :class:`_Unfinished`
        that ``_finish_fragment`` renders (awaitable when async).  A filter
        of every environment the extension's is overlaid by: it renders
        with the context's.  A fragment with ``{% nocache %}`` blocks
        compiles to ``_cache_fragment`` instead."""
        environment = context.environment
        cache = cache_of(environment)
        key = None
        if condition and cache.memo is not None:
            key = memo_key(
                cache.identity, context.name, digest, name, timeout, tags, vary
            )
            body = None if key is None else cache.remembered(key)
            if body is not None:  # _markup(), inlined: the hit's path
                return Markup(body) if context.eval_ctx.autoescape else body
        requests = self._requests(
            cache, context, lineno, name, digest, timeout, tags, [vary], None, key
        )
        if not condition:
            return _Unfinished(cache, context, requests, None)
        if environment.is_async:
            return self._alookup(cache, context, requests, wait=True, memo_key=key)
        found = cache.lookup(requests, wait=True, memo_key=key)
        if type(found) is list:
            return _markup(context, found[0])
        return made(_Unfinished, (cache, context, requests, found, None))

    @pass_context
    def _lookup_each(
        self,
        context: Context,
        lineno: int,
        name: str,
        digest: str,
        timeout: object,
        tags: object,
        condition: object,
        items: list[object],
        varies: list[tuple[object, ...]],
    ) -> Any:
        """``_lookup_fragment`` for a collection: the joined output when
        every item is a fresh, whole hit (blocks: ``_cache_each``)."""
        environment = context.environment
        cache = cache_of(environment)
        key = None
        if condition and varies and cache.memo is not None:
            key = memo_key(
                cache.identity,
                context.name,
                digest,
                name,
                timeout,
                tags,
                varies,
                items=True,
            )
            body = None if key is None else cache.remembered(key)
            if body is not None:
                return _markup(context, body)
        requests = self._requests(
            cache, context, lineno, name, digest, timeout, tags, varies, None
        )
        if not requests:
            return ""
        if not condition:
            return _Unfinished(cache, context, requests, None, items)
        if environment.is_async:
            return self._alookup(cache, context, requests, items=items, memo_key=key)
        found = cache.lookup(requests, memo_key=key)
        if type(found) is list:
            return _markup(context, "".join(found))
        return _Unfinished(cache, context, requests, found, items)  # type: ignore[arg-type]

    async def _alookup(
        self,
        cache: FragmentCache,
        context: Context,
        requests: list[FragmentRequest],
        *,
        wait: bool = False,
        items: list[object] | None = None,
        memo_key: Hashable = None,
    ) -> Any:
        found = await cache.alookup(requests, wait=wait, memo_key=memo_key)
        if type(found) is list:
            return _markup(context, "".join(found))
        return _Unfinished(cache, context, requests, found, items)  # type: ignore[arg-type]

    @pass_context
    def _finish_fragment(
        self, context: Context, unfinished: _Unfinished | str, caller: Caller
    ) -> Any:
        """Render what ``_lookup_fragment`` could not answer: a miss, a hit
        with holes to fill, or a fragment that bypasses the cache (or
        output a hit that is empty).  A filter, as that is."""
        if isinstance(unfinished, str):
            return unfinished
        if unfinished.pending is None:
            unfinished.cache.report_skipped(unfinished.requests)
            return caller()
        # A fragment without blocks (one with compiles to _cache_fragment):
        # the caller renders no hole, and the pending lookup needs none.
        pending = unfinished.pending
        if context.environment.is_async:
            return self._afinish(unfinished, pending, lambda _: caller())
        # The body as the caller renders it, no hole given (``None``).
        raw = _raw(caller)
        (body,) = unfinished.cache.finish(pending, lambda _: raw(None))
        return _markup(unfinished.context, body)

    @pass_context
    def _finish_each(
        self, context: Context, unfinished: _Unfinished | str, caller: Caller
    ) -> Any:
        """``_finish_fragment`` for a collection: renders only the misses."""
        if isinstance(unfinished, str):
            return unfinished
        items = unfinished.items or []
        is_async = context.environment.is_async
        if unfinished.pending is None:
            unfinished.cache.report_skipped(unfinished.requests)
            if is_async:
                return self._arender_all(unfinished, caller)
            return _markup(unfinished.context, "".join(caller(i) for i in items))
        pending = unfinished.pending  # no blocks: see _finish_fragment
        if is_async:
            return self._afinish(unfinished, pending, lambda i: caller(items[i]))
        raw = _raw(caller)
        bodies = unfinished.cache.finish(pending, lambda i: raw(items[i], None))
        return _markup(unfinished.context, "".join(bodies))

    async def _afinish(
        self,
        unfinished: _Unfinished,
        pending: Pending,
        render: Callable[[int], Awaitable[str]],
    ) -> str:
        bodies = await unfinished.cache.afinish(pending, render)
        return _markup(unfinished.context, "".join(bodies))

    async def _arender_all(self, unfinished: _Unfinished, caller: Caller) -> str:
        bodies = [await caller(item) for item in unfinished.items or []]
        return _markup(unfinished.context, "".join(bodies))

    @pass_context
    def _cache_fragment(
        self,
        context: Context,
        lineno: int,
        name: str,
        digest: str,
        timeout: object,
        tags: object,
        condition: object,
        owner: str,
        lines: dict[int, int],
        vary: list[object],
        caller: Caller,
    ) -> Any:
        """A fragment with holes, which a hit renders through its *caller*
        too: the lookup and the render in one call (a filter), with
        ``_lookup_fragment``'s arguments and its blocks' *owner* and
        *lines*."""
        environment = context.environment
        cache = cache_of(environment)
        table = HoleTable(owner, lines, _raw(caller))
        key = None
        if condition and cache.memo is not None and not environment.is_async:
            key = memo_key(
                cache.identity, context.name, digest, name, timeout, tags, vary
            )

            def fill(found: Remembered) -> str:
                request = found.request.rendering(context, table, lineno)
                render = lambda _: caller()  # noqa: E731
                return filling.open_stored(cache, request, found.body, render, 0)

            body = None if key is None else cache.remembered(key, fill)
            if body is not None:
                return _markup(context, body)
        requests = self._requests(
            cache, context, lineno, name, digest, timeout, tags, [vary], table, key
        )
        if not condition:
            cache.report_skipped(requests)
            return caller()
        if environment.is_async:
            return self._arender(cache, context, requests, lambda _: caller(), True)
        found = cache.lookup(requests, wait=True, memo_key=key)
        if type(found) is not list:
            found = cache.finish(found, lambda _: caller())  # type: ignore[arg-type]
        return _markup(context, found[0])

    @pass_context
    def _cache_each(
        self,
        context: Context,
        lineno: int,
        name: str,
        digest: str,
        timeout: object,
        tags: object,
        condition: object,
        owner: str,
        lines: dict[int, int],
        items: list[object],
        varies: list[tuple[object, ...]],
        caller: Caller,
    ) -> Any:
        """``_cache_fragment`` for a collection, with ``_lookup_each``'s
        arguments and its blocks'."""
        cache = cache_of(context.environment)
        raw = _raw(caller)
        table = HoleTable(owner, lines, lambda i: raw(None, i))
        requests = self._requests(
            cache, context, lineno, name, digest, timeout, tags, varies, table
        )
        if not requests:
            return ""
        if not condition:
            unfinished = _Unfinished(cache, context, requests, None, items)
            return self._finish_each(context, unfinished, caller)
        render = lambda i: caller(items[i])  # noqa: E731
        if context.environment.is_async:
            return self._arender(cache, context, requests, render, False)
        return _markup(context, "".join(cache.render_many(requests, render)))

    async def _arender(
        self,
        cache: FragmentCache,
        context: Context,
        requests: list[FragmentRequest],
        render: Callable[[int], Awaitable[str]],
        wait: bool,
    ) -> str:
        bodies = await cache.render_many_async(requests, render, wait=wait)
        return _markup(context, "".join(bodies))

    def _nocache(self, owner: str, index: int, caller: Caller) -> Any:
        state = current.get()
        if state is None:  # outside any fragment: just the content
            return caller()
        if self.environment.is_async:
            return self._nocache_async(state, owner, index, caller)
        token = holes.apart(state)  # fragments inside start afresh
        try:
            output = caller()
        finally:
            current.reset(token)
        return holes.output(owner, index, output)

    async def _nocache_async(
        self, state: RenderState, owner: str, index: int, caller: Caller
    ) -> str:
        token = holes.apart(state)
        try:
            output = await caller()
        finally:
            current.reset(token)
        return holes.output(owner, index, output)

    def _invalidate(self, name: str, vary: list[object]) -> Any:
        if self.environment.is_async:
            return self._invalidate_async(name, vary)
        self.cache.invalidate(name, *vary)
        return ""

    async def _invalidate_async(self, name: str, vary: list[object]) -> str:
        await self.cache.ainvalidate(name, *vary)
        return ""

    def _key_for(self, name: str, vary: list[object]) -> str:
        return self.cache.key_for(name, *vary)


class _Unfinished(NamedTuple):
    """What a tag's lookup leaves for its render: the caller (and so the
    body) exists only on that branch of the compiled template."""

    cache: FragmentCache
    context: Context
    requests: list[FragmentRequest]
    #: ``None``: the tag's ``if`` was false, the body renders uncached.
    pending: Pending | None
    items: list[object] | None = None

    def __bool__(self) -> bool:
        return False  # the compiled tag outputs what is true: a hit


def _raw(caller: Caller) -> Caller:
    """The function of a ``caller`` macro, called without the checks of
    :class:`jinja2.runtime.Macro` (a hole's render on every hit: its
    arguments are ours and always given)."""
    return getattr(caller, "_func", caller)


def _markup(context: Context, body: str) -> str:
    # The body was rendered once already: under autoescape it is safe markup
    # and must not be escaped a second time.
    return Markup(body) if context.eval_ctx.autoescape else body


def _where(context: Context, lineno: int) -> str:
    return where(context.name, lineno)
