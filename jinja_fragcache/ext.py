"""The Jinja2 extension: ``cache_fragment``, ``cache_each`` and friends.

The tags only parse and evaluate their arguments; every lookup goes through
:class:`~jinja_fragcache.cache.FragmentCache`, the one render path.
The block delimiters are the environment's own, so ``<% cache_fragment %>``
works wherever ``block_start_string="<%"`` is set.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import (
    TemplateNotFound,
    TemplateSyntaxError,
)
from jinja2.ext import Extension
from jinja2.parser import Parser

from . import nocache
from .cache import FragmentCache
from .tagruntime import TagRuntime, cache_of
from .timeouts import check_timeout

Caller = Callable[..., Any]


class FragmentCacheExtension(TagRuntime, Extension):
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
        {% nocache %}...{% endnocache %}

    A ``nocache`` block inside a fragment renders on every request, hit or
    miss: a hole in the cached body (see :mod:`jinja_fragcache.holes`).

    The environment's ``fragment_cache`` attribute picks the
    :class:`FragmentCache`; when it is ``None`` the process default (an
    in-process :class:`MemoryBackend`) is used::

        env = Environment(extensions=[FragmentCacheExtension])
        env.fragment_cache = FragmentCache(RedisBackend.from_url(url))
    """

    tags = {
        "cache_fragment",
        "cache_each",
        "invalidate_fragment",
        "cache_key_for",
        "nocache",
    }

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        environment.extend(fragment_cache=None)
        for method in _FILTERED:
            # The method itself: it reads the rendering environment (an
            # overlay's, perhaps: they share the filters) from the context.
            environment.filters[self._filter_name(method)] = getattr(self, method)
        # What cache_each gathers its items and their vary values with: C
        # functions called as filters (a method call goes through
        # ``context.call``, about a microsecond an item).
        environment.filters[self._filter_name("_as_list")] = list
        environment.filters[self._filter_name("_append")] = list.append

    def _filter_name(self, method: str) -> str:
        # A name no template can write: it is not an identifier.
        return f"{self.identifier}:{method}"

    def _filter_call(
        self, method: str, arguments: list[nodes.Expr], lineno: int
    ) -> nodes.Expr:
        """A call of *method* with *arguments* (the context first) as a
        filter: compiled as a plain call, where a method call goes through
        ``context.call`` (about a microsecond on every hit)."""
        _, first, *rest = arguments
        return nodes.Filter(
            first, self._filter_name(method), rest, [], None, None, lineno=lineno
        )

    @property
    def cache(self) -> FragmentCache:
        """The cache this environment renders with (see
        :func:`~jinja_fragcache.tagruntime.cache_of`)."""
        return cache_of(self.environment)

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

        if tag == "nocache":
            return self._parse_nocache(parser, lineno)

        timeout = self._parse_timeout(parser, tag, lineno)
        name = self._parse_name(parser, tag, lineno)
        if tag == "cache_each":
            target = parser.parse_assign_target(name_only=True)
            parser.stream.expect("name:in")
            iterable = parser.parse_expression(with_condexpr=False)
        vary, tags, condition = self._parse_options(parser, tag, keywords=True)
        body = self._parse_body(parser, tag, lineno)
        inner = self._inner_conditions(body)
        bound = {target.name} if tag == "cache_each" else set()
        blocks = nocache.blocks_in(
            parser, body, tag, name, lineno, bound, self._is_nocache
        )
        digest = self._digest(parser, body)
        # The caller renders the body, or with hole=N, block N alone, with
        # the context the tag sees: what a hit needs to fill its holes.
        hole = nodes.Name(f"_fragcache_hole_{parser.free_identifier().name}", "param")
        body = nocache.with_holes(body, hole.name, blocks)
        common = [
            nodes.ContextReference(),
            nodes.Const(lineno),
            nodes.Const(name),
            nodes.Const(digest),
            timeout,
            tags,
            condition,
        ]
        # What a fragment with blocks takes besides: whose they are, and
        # each one's line (a lookup of one without takes neither).
        holed = [
            nodes.Const(nocache.owner(parser)),
            nodes.Const({index: line for index, (line, _) in blocks.items()}),
        ]
        # A hit is one call and an output: the body, its caller and the
        # render machinery exist only on the other branch.  A fragment with
        # holes needs its caller on a hit too: the caller, then one call.
        # An internal name: a plain local of the compiled function, which
        # Jinja neither stores in the context nor checks for undefined.
        found = parser.free_identifier()
        # The caller is a macro of a name no template writes (a leading
        # underscore: never exported), handed to a filter: a call block
        # would call through ``context.call``, about a microsecond more on
        # every miss and every hit with holes.
        caller = f"_fragcache_caller_{found.name}"
        by, context = nodes.Name(caller, "load"), nodes.ContextReference()
        if tag == "cache_fragment":
            varied = nodes.List(vary + inner)
            macro = nodes.Macro(caller, [hole], [nodes.Const(None)], body)
            if blocks:
                arguments = [*common, *holed, varied, by]
                lookup = self._filter_call("_cache_fragment", arguments, lineno)
                return _with_caller(macro, lookup)
            lookup = self._filter_call("_lookup_fragment", [*common, varied], lineno)
            finish = self._filter_call("_finish_fragment", [context, found, by], lineno)
            return _hit_or_render(found, lookup, _with_caller(macro, finish))

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
        collect = nodes.Filter(
            varies,
            self._filter_name("_append"),
            [nodes.Tuple(vary + inner, "load")],
            [],
            None,
            None,
        )
        params = [nodes.Name(target.name, "param"), hole]
        macro = nodes.Macro(caller, params, [nodes.Const(None)], body)
        if blocks:
            arguments = [*common, *holed, items, varies, by]
            lookup = self._filter_call("_cache_each", arguments, lineno)
            both: list[nodes.Node] = [_with_caller(macro, lookup)]
        else:
            arguments = [*common, items, varies]
            lookup = self._filter_call("_lookup_each", arguments, lineno)
            finish = self._filter_call("_finish_each", [context, found, by], lineno)
            both = _hit_or_render(found, lookup, _with_caller(macro, finish))
        # In a scope of its own: the items and their vary values are plain
        # locals, never stored in the context.
        return nodes.Scope(
            [
                nodes.Assign(
                    nodes.Name(items.name, "store"),
                    nodes.Filter(
                        iterable, self._filter_name("_as_list"), [], [], None, None
                    ),
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
                *both,
            ]
        )

    def _parse_nocache(self, parser: Parser, lineno: int) -> nodes.Node:
        """``{% nocache %}``: numbered in its template, so a stored body can
        name it (see :mod:`jinja_fragcache.holes`)."""
        index = getattr(parser, "_fragcache_blocks", 0)
        parser._fragcache_blocks = index + 1  # type: ignore[attr-defined]
        body = self._parse_body(parser, "nocache", lineno)
        call = self.call_method(
            "_nocache",
            [nodes.Const(nocache.owner(parser)), nodes.Const(index)],
            lineno=lineno,
        )
        return nodes.CallBlock(call, [], [], body, lineno=lineno)

    def _is_nocache(self, node: nodes.Node) -> bool:
        return self._is_call(node, "_nocache")

    def _is_call(self, node: nodes.Node, *methods: str) -> bool:
        """Whether *node* is a call block of one of this extension's *methods*."""
        target = getattr(getattr(node, "call", None), "node", None)
        return (
            isinstance(target, nodes.ExtensionAttribute)
            and target.identifier == self.identifier
            and target.name in methods
        )

    def _inner_conditions(
        self, body: list[nodes.Node], seen: frozenset[str] = frozenset()
    ) -> list[nodes.Expr]:
        r"""The ``if`` of every fragment nested in *body*, through constant
        ``include``\ s too, as booleans for the outer key: an outer entry
        must not freeze what an inner meant to keep per condition (a staff
        menu inside a shared page)."""
        found: list[nodes.Expr] = []
        scope = nodes.Scope(body)
        for call in scope.find_all(nodes.Filter):
            if call.name not in map(self._filter_name, _LOOKUPS):
                continue
            condition = call.args[4]  # the context and lineno go before
            if isinstance(condition, nodes.Const) and condition.value is True:
                continue
            # (a parsed include's nodes point at the environment: shared)
            shared = {id(self.environment): self.environment}
            found.append(nodes.Not(nodes.Not(copy.deepcopy(condition, shared))))
        for ref in scope.find_all(nodes.Include):
            name = getattr(ref.template, "value", None)
            if isinstance(name, str) and name not in seen:
                included = self._parse_included(name)
                if included is not None:
                    found += self._inner_conditions(included.body, seen | {name})
        return found

    def _parse_included(self, name: str) -> nodes.Template | None:
        loader = self.environment.loader
        if loader is None:
            return None
        try:
            source, filename, _ = loader.get_source(self.environment, name)
        except TemplateNotFound:  # an error at render time, or ignore missing
            return None
        return self.environment.parse(source, name, filename)

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


#: The calls that look a fragment up, whose arguments start alike.
_LOOKUPS = ("_lookup_fragment", "_lookup_each", "_cache_fragment", "_cache_each")
#: The calls compiled as filters (see ``_filter_call``): the lookups, and
#: what renders the fragments they left.
_FILTERED = (*_LOOKUPS, "_finish_fragment", "_finish_each")


def _with_caller(macro: nodes.Macro, call: nodes.Expr) -> nodes.Scope:
    """*macro*, then the output of *call*, which takes it: in a scope of
    their own, so the macro's name is a plain local there, neither looked
    up in the context beforehand nor stored in it."""
    return nodes.Scope([macro, nodes.Output([call])])


def _hit_or_render(
    found: nodes.InternalName, lookup: nodes.Expr, render: nodes.Node
) -> list[nodes.Node]:
    """``found = lookup``, then its output if it is one (a hit), else
    *render* (which takes *found* on).  A plain truth test, which costs no
    call: what is left to render is false, and so is an empty hit, which
    *render* outputs as it is."""
    return [
        nodes.Assign(found, lookup),
        nodes.If(found, [nodes.Output([found])], [], [render]),
    ]
