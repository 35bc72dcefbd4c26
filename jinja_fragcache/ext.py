"""The Jinja2 extension: ``cache_fragment``, ``cache_each`` and friends.

The tags only parse and evaluate their arguments; every lookup goes through
:class:`~jinja_fragcache.cache.FragmentCache`, the one render path.
The block delimiters are the environment's own, so ``<% cache_fragment %>``
works wherever ``block_start_string="<%"`` is set.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import (
    TemplateNotFound,
    TemplateRuntimeError,
    TemplateSyntaxError,
)
from jinja2.ext import Extension
from jinja2.parser import Parser
from jinja2.runtime import Context
from markupsafe import Markup

from .api import get_default_cache
from .cache import FragmentCache, FragmentRequest, build_requests
from .timeouts import check_timeout

Caller = Callable[..., Any]


class FragmentCacheExtension(Extension):
    """Caches the output of template blocks.

    Usage::

        {% cache_fragment TIMEOUT NAME [VARY ...] [tags=EXPR] [if COND] %}
            ...
        {% endcache_fragment %}
        {% cache_each TIMEOUT NAME ITEM in ITERABLE VARY ... [tags=EXPR] %}
            ...
        {% endcache_each %}
        {% invalidate_fragment NAME [VARY ...] %}
        {% cache_key_for NAME [VARY ...] %}

    The environment's ``fragment_cache`` attribute picks the
    :class:`FragmentCache`; when it is ``None`` the process default (an
    in-process :class:`MemoryBackend`) is used::

        env = Environment(extensions=[FragmentCacheExtension])
        env.fragment_cache = FragmentCache(RedisBackend.from_url(url))
    """

    tags = {"cache_fragment", "cache_each", "invalidate_fragment", "cache_key_for"}

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        environment.extend(fragment_cache=None)

    @property
    def cache(self) -> FragmentCache:
        """The cache this environment renders with, read on every use.

        ``environment.fragment_cache`` is a :class:`FragmentCache`, a callable
        returning one (read at every render, as Django reads its settings),
        or ``None`` for the process default.
        """
        configured = self.environment.fragment_cache  # type: ignore[attr-defined]
        if callable(configured):
            configured = configured()
        return configured or get_default_cache()

    # -- parsing -------------------------------------------------------------

    def parse(self, parser: Parser) -> nodes.Node | list[nodes.Node]:
        token = next(parser.stream)
        lineno = token.lineno
        tag = str(token.value)
        if tag in ("invalidate_fragment", "cache_key_for"):
            name = self._parse_name(parser, tag, lineno)
            vary, _, _ = self._parse_options(parser, tag, keywords=False)
            method = "_invalidate" if tag == "invalidate_fragment" else "_key_for"
            call = self.call_method(
                method, [nodes.Const(name), nodes.List(vary)], lineno=lineno
            )
            return nodes.Output([call], lineno=lineno)

        timeout = self._parse_timeout(parser, tag, lineno)
        name = self._parse_name(parser, tag, lineno)
        if tag == "cache_each":
            target = parser.parse_assign_target(name_only=True)
            parser.stream.expect("name:in")
            iterable = parser.parse_expression(with_condexpr=False)
        vary, tags, condition = self._parse_options(parser, tag, keywords=True)
        body = self._parse_body(parser, tag, lineno)
        inner = self._inner_conditions(body)
        common = [
            nodes.ContextReference(),
            nodes.Const(lineno),
            nodes.Const(name),
            nodes.Const(self._digest(parser, body)),
            timeout,
            tags,
            condition,
        ]
        if tag == "cache_fragment":
            call = self.call_method(
                "_cache_fragment", [*common, nodes.List(vary + inner)], lineno=lineno
            )
            return nodes.CallBlock(call, [], [], body, lineno=lineno)

        if not vary:
            parser.fail(
                f"cache_each {name!r} needs at least one VARY value that identifies "
                f"the item, such as {target.name}.id",
                lineno,
            )
        if any(n.name == "loop" for expr in vary for n in expr.find_all(nodes.Name)):
            parser.fail(
                f"cache_each {name!r}: VARY cannot use 'loop'; "
                "{% set %} the value first",
                lineno,
            )
        # Evaluate every item's VARY up front, in an inline loop, so all keys
        # can be read at once; the caller then renders only the misses.
        ident = parser.free_identifier().name
        items = nodes.Name(f"_fragcache_items_{ident}", "load")
        varies = nodes.Name(f"_fragcache_varies_{ident}", "load")
        collect = nodes.Call(
            nodes.Getattr(varies, "append", "load"),
            [nodes.Tuple(vary + inner, "load")],
            [],
            None,
            None,
        )
        call = self.call_method("_cache_each", [*common, items, varies], lineno=lineno)
        return [
            nodes.Assign(
                nodes.Name(items.name, "store"),
                self.call_method("_as_list", [iterable]),
            ),
            nodes.Assign(nodes.Name(varies.name, "store"), nodes.List([])),
            nodes.For(
                nodes.Name(target.name, "store"),
                items,
                [nodes.ExprStmt(collect)],
                [],
                None,
                False,
            ),
            nodes.CallBlock(call, [nodes.Name(target.name, "param")], [], body),
        ]

    def _inner_conditions(self, body: list[nodes.Node]) -> list[nodes.Expr]:
        """The ``if`` of every fragment nested in *body*, as booleans for
        the outer key: an outer entry must not freeze what an inner meant
        to keep per condition (a staff menu inside a shared page)."""
        found: list[nodes.Expr] = []
        for block in nodes.Scope(body).find_all(nodes.CallBlock):
            call = block.call
            target = getattr(call, "node", None)
            if not (
                isinstance(target, nodes.ExtensionAttribute)
                and target.identifier == self.identifier
                and target.name in ("_cache_fragment", "_cache_each")
            ):
                continue
            condition = call.args[6]
            if isinstance(condition, nodes.Const) and condition.value is True:
                continue
            found.append(nodes.Not(nodes.Not(copy.deepcopy(condition))))
        return found

    def _parse_timeout(self, parser: Parser, tag: str, lineno: int) -> nodes.Expr:
        if parser.stream.current.type == "block_end":
            parser.fail(f"{tag} needs a TIMEOUT and a NAME", lineno)
        timeout = parser.parse_expression(with_condexpr=False)
        try:
            value = timeout.as_const(nodes.EvalContext(self.environment))
        except nodes.Impossible:
            return timeout  # computed: checked at render time
        try:
            check_timeout(value)
        except ValueError as exc:
            parser.fail(f"{tag}: {exc}", lineno)
        return timeout

    def _parse_name(self, parser: Parser, tag: str, lineno: int) -> str:
        token = parser.stream.current
        if token.type == "name" and parser.stream.look().type != "assign":
            next(parser.stream)
            return str(token.value)  # a bare name is literal, as in Django
        if token.type == "string":
            next(parser.stream)
            return str(token.value)
        parser.fail(
            f"{tag} needs a fragment NAME (an identifier or a string literal) "
            f"after the timeout, got {token.value!r}"
            if tag in ("cache_fragment", "cache_each")
            else f"{tag} needs a fragment NAME (an identifier or a string literal), "
            f"got {token.value!r}",
            lineno,
        )

    def _parse_options(
        self, parser: Parser, tag: str, *, keywords: bool
    ) -> tuple[list[nodes.Expr], nodes.Expr, nodes.Expr]:
        """Parse ``VARY... [tags=EXPR] [if COND]`` up to the block end."""
        vary: list[nodes.Expr] = []
        tags: nodes.Expr = nodes.Const(None)
        condition: nodes.Expr = nodes.Const(True)
        stream = parser.stream
        while stream.current.type != "block_end":
            token = stream.current
            if token.type == "comma":
                next(stream)
            elif token.type == "name" and stream.look().type == "assign":
                if not keywords or token.value != "tags":
                    known = "tags=" if keywords else "none"
                    parser.fail(
                        f"{tag} got an unknown keyword {token.value!r} "
                        f"(accepted: {known})",
                        token.lineno,
                    )
                if not isinstance(tags, nodes.Const) or tags.value is not None:
                    parser.fail(f"{tag} got tags= twice", token.lineno)
                next(stream)
                next(stream)
                tags = parser.parse_expression(with_condexpr=False)
            elif token.test("name:if") and keywords:
                next(stream)
                condition = parser.parse_expression()
                if stream.current.type != "block_end":
                    parser.fail(
                        f"{tag}: 'if COND' must come last", stream.current.lineno
                    )
            else:
                vary.append(parser.parse_expression(with_condexpr=False))
        return vary, tags, condition

    def _parse_body(self, parser: Parser, tag: str, lineno: int) -> list[nodes.Node]:
        end = f"end{tag}"
        try:
            return parser.parse_statements((f"name:{end}",), drop_needle=True)
        except TemplateSyntaxError as exc:
            if "Unexpected end of template" in str(exc.message) and end in str(
                exc.message
            ):
                parser.fail(
                    f"{tag} on line {lineno} is never closed: missing {end}", lineno
                )
            raise

    def _digest(self, parser: Parser, body: list[nodes.Node]) -> str:
        """Fingerprint the block: its parsed source and what it includes.

        A node's repr holds its content but not its line number, so editing
        the template elsewhere leaves the digest alone.
        """
        digest = hashlib.blake2b(repr(body).encode(), digest_size=12)
        loader = self.environment.loader
        refs = nodes.Scope(body).find_all(
            (nodes.Include, nodes.Import, nodes.FromImport)
        )
        for ref in refs:
            template = getattr(ref, "template", None)
            if loader is None or not isinstance(template, nodes.Const):
                continue
            name = str(template.value)
            try:
                source = loader.get_source(self.environment, name)[0]
            except TemplateNotFound:
                source = "\0missing"
            digest.update(f"\0{name}\0{source}".encode())
        return digest.hexdigest()

    # -- rendering ---------------------------------------------------------------

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
    ) -> list[FragmentRequest]:
        """One request per variant; errors name the template and the line."""
        try:
            return build_requests(
                name,
                varies,
                timeout=timeout,
                tags=tags,
                template=context.name or "",
                digest=digest,
                context=context,
                identity=cache.identity,
                where=_where(context, lineno),
                debug=cache.debug,
            )
        except ValueError as exc:
            raise TemplateRuntimeError(f"{exc} ({_where(context, lineno)})") from None

    def _cache_fragment(
        self,
        context: Context,
        lineno: int,
        name: str,
        digest: str,
        timeout: object,
        tags: object,
        condition: object,
        vary: list[object],
        caller: Caller,
    ) -> Any:
        cache = self.cache
        (request,) = self._requests(
            cache, context, lineno, name, digest, timeout, tags, [vary]
        )
        if not condition:
            cache.report_skipped([request])
            return caller()
        if self.environment.is_async:
            return self._cache_fragment_async(cache, context, request, caller)
        return _markup(context, cache.render(request, caller))

    async def _cache_fragment_async(
        self,
        cache: FragmentCache,
        context: Context,
        request: FragmentRequest,
        caller: Caller,
    ) -> str:
        return _markup(context, await cache.render_async(request, caller))

    @staticmethod
    def _as_list(iterable: Iterable[object]) -> list[object]:
        return list(iterable)

    def _cache_each(
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
        caller: Caller,
    ) -> Any:
        cache = self.cache
        requests = self._requests(
            cache, context, lineno, name, digest, timeout, tags, varies
        )
        if self.environment.is_async:
            return self._cache_each_async(
                cache, context, requests, condition, items, caller
            )
        if not condition:
            cache.report_skipped(requests)
            bodies = [caller(item) for item in items]
        elif requests:
            bodies = cache.render_many(requests, lambda i: caller(items[i]))
        else:
            bodies = []
        return _markup(context, "".join(bodies))

    async def _cache_each_async(
        self,
        cache: FragmentCache,
        context: Context,
        requests: list[FragmentRequest],
        condition: object,
        items: list[object],
        caller: Callable[..., Awaitable[str]],
    ) -> str:
        if not condition:
            cache.report_skipped(requests)
            bodies = [await caller(item) for item in items]
        elif requests:
            bodies = await cache.render_many_async(requests, lambda i: caller(items[i]))
        else:
            bodies = []
        return _markup(context, "".join(bodies))

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


def _markup(context: Context, body: str) -> str:
    # The body was rendered once already: under autoescape it is safe markup
    # and must not be escaped a second time.
    return Markup(body) if context.eval_ctx.autoescape else body


def _where(context: Context, lineno: int) -> str:
    return f"template {context.name or '<string>'!r}, line {lineno}"
