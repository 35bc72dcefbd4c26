"""DTL twins of the Jinja tags, on the same keys and the same render path.

Usage::

    {% load cache_tags %}
    {% cache_fragment TIMEOUT NAME [VARY ...] [tags=EXPR] [if COND] %}
        …
    {% endcache_fragment %}
    {% cache_each TIMEOUT NAME ITEM in ITERABLE VARY ... [tags=EXPR] [if COND] %}
        …
    {% endcache_each %}
    {% invalidate_fragment NAME [VARY ...] %}
    {% cache_key_for NAME [VARY ...] %}
    {% nocache %}…{% endnocache %}

A ``nocache`` block inside a fragment renders on every request, hit or
miss: a hole in the cached body (see :mod:`jinja_fragcache.holes`).

A fragment cached by a Jinja2 template is a hit here for the same name and
vary values, and the other way round: both call
:func:`django_bridge.cache.get_fragment_cache` and the core's
``make_fragment_key``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from django import template
from django.template.base import (
    FilterExpression,
    Node,
    NodeList,
    Parser,
    Token,
    TokenType,
)
from django.template.context import Context
from django.template.defaulttags import TemplateIfParser
from django.template.engine import Engine
from django.template.exceptions import TemplateDoesNotExist
from django.template.loader_tags import IncludeNode
from django.utils.safestring import SafeString, mark_safe

from jinja_fragcache import FragmentRequest, filling, holes, render_state
from jinja_fragcache.cache import build_requests
from jinja_fragcache.holes import HoleTable
from jinja_fragcache.identity import MissingValue
from jinja_fragcache.memo import Remembered, memo_key, strings_of
from jinja_fragcache.requests import where
from jinja_fragcache.timeouts import check_timeout

from .. import templatenames
from ..api import invalidate_fragment
from ..cache import get_fragment_cache

register = template.Library()

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_KEYWORD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.+)\Z", re.S)

__all__ = ["invalidate_fragment", "register"]


def _fail(parser: Parser, token: Token, message: str) -> template.TemplateSyntaxError:
    name = parser.origin.template_name if parser.origin else None
    shown = None if name is None else str(name)
    return template.TemplateSyntaxError(f"{message} ({where(shown, token.lineno)})")


def _name(parser: Parser, token: Token, tag: str, bits: list[str]) -> str:
    if not bits:
        raise _fail(parser, token, f"{tag} needs a fragment NAME")
    bit = bits.pop(0)
    if len(bit) >= 2 and bit[0] == bit[-1] and bit[0] in "'\"":
        return bit[1:-1]
    if _IDENTIFIER.match(bit):
        return bit  # a bare name is literal, as in Django's {% cache %}
    raise _fail(
        parser,
        token,
        f"{tag} needs a fragment NAME (an identifier or a string), got {bit!r}",
    )


def _timeout(parser: Parser, token: Token, tag: str, bit: str) -> FilterExpression:
    expression = parser.compile_filter(bit)
    literal = _literal(expression)
    if literal is not _NOT_LITERAL:
        try:
            check_timeout(literal)
        except ValueError as exc:
            raise _fail(parser, token, f"{tag}: {exc}") from None
    return expression


_NOT_LITERAL = object()


def _literal(expression: FilterExpression) -> object:
    if expression.token == "None":
        return None
    variable = expression.var
    if expression.filters:
        return _NOT_LITERAL
    if isinstance(variable, template.Variable):
        return _NOT_LITERAL if variable.lookups is not None else variable.literal
    return variable  # a literal string


class _Options:
    """``VARY... [tags=EXPR] [if COND]`` as compiled expressions."""

    def __init__(
        self, parser: Parser, token: Token, tag: str, bits: list[str], *, keywords: bool
    ) -> None:
        self.vary: list[FilterExpression] = []
        self.tags: FilterExpression | None = None
        self.condition: Any = None
        while bits:
            bit = bits.pop(0)
            keyword = _KEYWORD.match(bit)
            if bit == "if" and keywords:
                if not bits:
                    raise _fail(parser, token, f"{tag}: 'if' needs a condition")
                self.condition = TemplateIfParser(parser, bits).parse()
                break
            if keyword and not (len(bit) >= 2 and bit[0] in "'\""):
                if not keywords or keyword.group(1) != "tags":
                    accepted = "tags=" if keywords else "none"
                    raise _fail(
                        parser,
                        token,
                        f"{tag} got an unknown keyword {keyword.group(1)!r} "
                        f"(accepted: {accepted})",
                    )
                if self.tags is not None:
                    raise _fail(parser, token, f"{tag} got tags= twice")
                self.tags = parser.compile_filter(keyword.group(2))
            else:
                bit = bit.strip(",")  # "a, b": commas are accepted too
                if bit:
                    self.vary.append(parser.compile_filter(bit))

    def resolve_vary(self, context: Context) -> list[object]:
        return [_resolve(expression, context) for expression in self.vary]

    def cached(self, context: Context) -> bool:
        return self.condition is None or bool(self.condition.eval(context))

    def tag_values(self, context: Context) -> object:
        return None if self.tags is None else self.tags.resolve(context)


def _resolve(expression: FilterExpression, context: Context) -> object:
    """A vary value; a missing variable is marked as such, not ``""``, so it
    cannot make every visitor share one variant."""
    variable = expression.var
    if expression.filters or not isinstance(variable, template.Variable):
        return expression.resolve(context)
    try:
        return variable.resolve(context)
    except template.VariableDoesNotExist:
        return MissingValue(str(variable))


def _body(parser: Parser, token: Token, tag: str) -> tuple[NodeList, str]:
    """Parse the block; digest the tokens it is made of (and what it includes)."""
    before: list[Token] = list(parser.tokens)  # type: ignore[arg-type]
    end = f"end{tag}"
    try:
        nodelist = parser.parse((end,))
    except template.TemplateSyntaxError as exc:
        message = str(exc)
        if "Unclosed tag" in message and f"'{tag}'" in message:  # not an inner tag
            raise _fail(
                parser, token, f"{tag} is never closed: missing {end}"
            ) from None
        raise
    consumed = list(reversed(before[len(parser.tokens) :]))
    parser.delete_first_token()
    digest = hashlib.blake2b(digest_size=12)
    for item in consumed:
        digest.update(f"\0{item.token_type.value}:{item.contents}".encode())
        bits = item.split_contents() if item.token_type == TokenType.BLOCK else []
        if len(bits) >= 2 and bits[0] == "include" and bits[1][:1] in "'\"":
            digest.update(_included_source(parser, bits[1][1:-1]).encode())
    return nodelist, digest.hexdigest()


def _included_source(parser: Parser, name: str) -> str:
    try:
        return str(_loader(parser).get_template(name).source)
    except Exception:  # not found, or no loader: the name alone counts
        return "\0missing"


def _loader(parser: Parser) -> Any:
    """What loads the templates this one includes: its origin's loader, or
    for a template made from a string, the default engine."""
    loader = parser.origin.loader if parser.origin else None
    return loader or Engine.get_default()


def _nested_fragments(
    nodelist: NodeList, loader: Any, seen: frozenset[str] = frozenset()
) -> list[_FragmentNode]:
    r"""The fragments inside *nodelist*, at any depth and through constant
    ``include``\ s."""
    found = list(nodelist.get_nodes_by_type(_FragmentNode))
    for node in nodelist.get_nodes_by_type(IncludeNode):
        name = getattr(node.template, "var", None)  # type: ignore[attr-defined]
        if not isinstance(name, str) or name in seen:
            continue
        try:
            included = loader.get_template(name)
        except TemplateDoesNotExist:  # an error at render time
            continue
        found += _nested_fragments(included.nodelist, loader, seen | {name})
    return found  # type: ignore[return-value]


class NocacheNode(Node):
    """``{% nocache %}``: numbered in its template, so a stored body can
    name it (see :mod:`jinja_fragcache.holes`)."""

    def __init__(self, owner: str, index: int, lineno: int, nodelist: NodeList):
        self.owner, self.index, self.lineno = owner, index, lineno
        self.nodelist = nodelist

    def render(self, context: Context) -> str:
        state = render_state.current.get()
        if state is None:  # outside any fragment: just the content
            return self.nodelist.render(context)
        token = holes.apart(state)  # fragments inside start afresh
        try:
            output = self.nodelist.render(context)
        finally:
            render_state.current.reset(token)
        return holes.output(self.owner, self.index, output)


@register.tag("nocache")
def do_nocache(parser: Parser, token: Token) -> NocacheNode:
    """A part of a cached fragment rendered on every request."""
    index = getattr(parser, "_fragcache_blocks", 0)
    parser._fragcache_blocks = index + 1  # type: ignore[attr-defined]
    nodelist = parser.parse(("endnocache",))
    parser.delete_first_token()
    return NocacheNode(_owner(parser), index, token.lineno or 0, nodelist)


def _owner(parser: Parser) -> str:
    """Who the ``nocache`` blocks of the template being parsed belong to."""
    owner = getattr(parser, "_fragcache_owner", None)
    if owner is None:
        owner = f"{_template_name(parser)} {secrets.token_hex(8)}"
        parser._fragcache_owner = owner  # type: ignore[attr-defined]
    return str(owner)


def _check_blocks(
    parser: Parser,
    token: Token,
    tag: str,
    name: str,
    nodelist: NodeList,
    binds: set[str],
) -> None:
    """A hit renders a ``nocache`` block without the fragment's body, so a
    name the body binds would not exist there: reading one is an error."""
    every = templatenames.nodes_in(nodelist)
    for block in every:
        if not isinstance(block, NocacheNode):
            continue
        inside = templatenames.nodes_in(block.nodelist)
        own = {id(node) for node in inside}
        outside = [node for node in every if id(node) not in own]
        clash = templatenames.read(inside) - templatenames.bound(inside)
        clash &= binds | templatenames.bound(outside)
        if clash:
            raise _fail(
                parser,
                block.token or token,
                f"nocache reads "
                f"{', '.join(map(repr, sorted(clash)))}, which {tag} {name!r} sets "
                "inside: on a hit the fragment's body does not run, so it would "
                "not exist. Set it before the fragment.",
            )


class _FragmentNode(Node):
    def __init__(
        self,
        tag: str,
        token: Token,
        name: str,
        timeout: FilterExpression,
        options: _Options,
        nodelist: NodeList,
        digest: str,
        parser: Parser,
    ) -> None:
        self.tag, self.token, self.name = tag, token, name
        self.lineno = token.lineno
        self.timeout, self.options, self.nodelist = timeout, options, nodelist
        self.digest, self.template_name = digest, _template_name(parser)
        self.owner = _owner(parser)
        #: The ``nocache`` blocks inside, nested fragments' included.
        self.blocks = {
            node.index: node
            for node in nodelist.get_nodes_by_type(NocacheNode)
            if isinstance(node, NocacheNode)
        }
        # The ``if`` of every fragment nested inside, through constant
        # includes too, joins this one's key: an outer entry must not freeze
        # what an inner keeps per condition.
        self.inner_options = [
            node.options
            for node in _nested_fragments(nodelist, _loader(parser))
            if node.options.condition is not None
        ]

    def vary(self, context: Context) -> list[object]:
        """The vary values, with the nested fragments' conditions."""
        values = self.options.resolve_vary(context)
        values += [options.cached(context) for options in self.inner_options]
        return values

    def table(self, context: Context) -> HoleTable | None:
        """The ``nocache`` blocks inside, rendered with *context*."""
        if not self.blocks:
            return None
        lines = {index: block.lineno for index, block in self.blocks.items()}
        return HoleTable(
            self.owner, lines, lambda i: self.blocks[i].nodelist.render(context)
        )

    def requests(
        self, context: Context, varies: Sequence[Sequence[object]], key: Hashable = None
    ) -> list[FragmentRequest]:
        """One request per variant; with the memo *key* of one variant, its
        strings are the key's."""
        cache = get_fragment_cache()
        table = self.table(context)
        try:
            return build_requests(
                self.name,
                varies,
                timeout=self.timeout.resolve(context),
                tags=self.options.tag_values(context),
                template=self.template_name,
                digest=self.digest,
                context=context,
                holes=table,
                line=self.lineno or 0,
                identity=cache.identity,
                debug=cache.debug,
                strings=None if key is None else strings_of(key),
            )
        except ValueError as exc:
            place = where(self.template_name, self.lineno)
            raise template.TemplateSyntaxError(
                f"{self.tag} {self.name!r}: {exc} ({place})"
            ) from None


class CacheFragmentNode(_FragmentNode):
    def render(self, context: Context) -> SafeString:
        cache = get_fragment_cache()
        vary, cached, key = self.vary(context), self.options.cached(context), None
        if cached and cache.memo is not None:
            # A hit already checked, while the backend has not changed: no
            # read (see jinja_fragcache.memo).
            key = memo_key(
                cache.identity,
                self.template_name,
                self.digest,
                self.name,
                self.timeout.resolve(context),
                self.options.tag_values(context),
                vary,
            )
            body = None if key is None else cache.remembered(key, self._filler(context))
            if body is not None:
                return mark_safe(body)
        (request,) = self.requests(context, [vary], key)
        if not cached:
            cache.report_skipped([request])
            return self.nodelist.render(context)
        found = cache.lookup([request], wait=True, memo_key=key)
        if type(found) is not list:
            found = cache.finish(found, lambda _: self.nodelist.render(context))  # type: ignore[arg-type]
        return mark_safe(found[0])

    def _filler(self, context: Context) -> Callable[[Remembered], str]:
        """Fills the holes of a remembered body for this render."""

        def fill(found: Remembered) -> str:
            request = found.request.rendering(
                context, self.table(context), self.lineno or 0
            )
            render = lambda _: self.nodelist.render(context)  # noqa: E731
            return filling.open_stored(
                get_fragment_cache(), request, found.body, render, 0
            )

        return fill


class CacheEachNode(_FragmentNode):
    def __init__(self, *args: Any, target: str, iterable: FilterExpression) -> None:
        super().__init__(*args)
        self.target, self.iterable = target, iterable

    def render(self, context: Context) -> SafeString:
        items = list(self.iterable.resolve(context) or ())
        varies = []
        for item in items:
            with context.push({self.target: item}):
                varies.append(self.vary(context))
        requests = self.requests(context, varies)

        def render_item(index: int) -> str:
            with context.push({self.target: items[index]}):
                return self.nodelist.render(context)

        if not self.options.cached(context):
            get_fragment_cache().report_skipped(requests)
            bodies = [render_item(i) for i in range(len(items))]
        elif requests:
            bodies = get_fragment_cache().render_many(requests, render_item)
        else:
            bodies = []
        return mark_safe("".join(bodies))


def _template_name(parser: Parser) -> str:
    # "django:" keeps a DTL template from passing for a Jinja template of
    # the same name in the digest check: twins share entries.
    name = parser.origin.template_name if parser.origin else None
    return f"django:{name!s}" if name else ""


@register.tag("cache_fragment")
def do_cache_fragment(parser: Parser, token: Token) -> CacheFragmentNode:
    """Cache the block's output: ``{% cache_fragment 300 sidebar user.pk %}``."""
    bits = token.split_contents()
    tag = bits.pop(0)
    if len(bits) < 2:
        raise _fail(parser, token, f"{tag} needs a TIMEOUT and a NAME")
    timeout = _timeout(parser, token, tag, bits.pop(0))
    name = _name(parser, token, tag, bits)
    options = _Options(parser, token, tag, bits, keywords=True)
    nodelist, digest = _body(parser, token, tag)
    _check_blocks(parser, token, tag, name, nodelist, set())
    return CacheFragmentNode(
        tag,
        token,
        name,
        timeout,
        options,
        nodelist,
        digest,
        parser,
    )


@register.tag("cache_each")
def do_cache_each(parser: Parser, token: Token) -> CacheEachNode:
    """Cache each item of a collection, all read at once:
    ``{% cache_each 300 card p in products p.pk %}``."""
    bits = token.split_contents()
    tag = bits.pop(0)
    if len(bits) < 4 or bits[3] != "in" or len(bits) < 5:
        raise _fail(parser, token, f"{tag} needs TIMEOUT NAME ITEM in ITERABLE VARY...")
    timeout = _timeout(parser, token, tag, bits.pop(0))
    name = _name(parser, token, tag, bits)
    target, _, iterable = bits.pop(0), bits.pop(0), parser.compile_filter(bits.pop(0))
    options = _Options(parser, token, tag, bits, keywords=True)
    if not options.vary:
        raise _fail(
            parser,
            token,
            f"{tag} {name!r} needs at least one VARY value that identifies the item, "
            f"such as {target}.pk",
        )
    nodelist, digest = _body(parser, token, tag)
    _check_blocks(parser, token, tag, name, nodelist, {target})
    return CacheEachNode(
        tag,
        token,
        name,
        timeout,
        options,
        nodelist,
        digest,
        parser,
        target=target,
        iterable=iterable,
    )


class _KeyNode(Node):
    def __init__(self, name: str, options: _Options, invalidate: bool) -> None:
        self.name, self.options, self.invalidate = name, options, invalidate

    def render(self, context: Context) -> str:
        vary = self.options.resolve_vary(context)
        if self.invalidate:
            invalidate_fragment(self.name, *vary)
            return ""
        return get_fragment_cache().key_for(self.name, *vary)


@register.tag("invalidate_fragment")
def do_invalidate_fragment(parser: Parser, token: Token) -> _KeyNode:
    """Clear one variant: ``{% invalidate_fragment card product.pk %}``."""
    bits = token.split_contents()
    tag = bits.pop(0)
    name = _name(parser, token, tag, bits)
    return _KeyNode(name, _Options(parser, token, tag, bits, keywords=False), True)


@register.tag("cache_key_for")
def do_cache_key_for(parser: Parser, token: Token) -> _KeyNode:
    """Render the key of one variant, for debugging."""
    bits = token.split_contents()
    tag = bits.pop(0)
    name = _name(parser, token, tag, bits)
    return _KeyNode(name, _Options(parser, token, tag, bits, keywords=False), False)
