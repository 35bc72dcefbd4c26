"""Compiling ``{% nocache %}`` for Jinja2: the blocks a fragment tag holds,
the compile-time check of the names they read, and the caller that renders
one of them alone on a hit (see :mod:`jinja_fragcache.holes`)."""

from __future__ import annotations

import copy
import secrets
from collections.abc import Callable

from jinja2 import nodes
from jinja2.parser import Parser

#: Each block's index in its template, with its line and body.
Blocks = dict[int, tuple[int, list[nodes.Node]]]


def blocks_in(
    parser: Parser,
    body: list[nodes.Node],
    tag: str,
    name: str,
    lineno: int,
    bound: set[str],
    is_block: Callable[[nodes.Node], bool],
) -> Blocks:
    """Every ``nocache`` block in *body* (call blocks *is_block* knows),
    nested fragments' included.

    A hit renders them without the fragment's body, so a name the body
    binds (a ``for`` or ``cache_each`` variable, a ``set``, a macro
    argument; *bound*: the tag's own) would not exist there: reading one is
    a compile error.
    """
    blocks: Blocks = {}
    scope = nodes.Scope(body)
    for block in scope.find_all(nodes.CallBlock):
        if not is_block(block):
            continue
        index = block.call.args[1].value  # type: ignore[attr-defined]
        if index in blocks:  # a nested fragment's copy of it
            continue
        names = list(block.find_all(nodes.Name))
        own = {id(n) for n in names}
        reads = {n.name for n in names if n.ctx == "load"}
        reads -= {n.name for n in names if n.ctx != "load"}
        binds = set(bound) | {
            n.name
            for n in scope.find_all(nodes.Name)
            if n.ctx != "load" and id(n) not in own
        }
        if "loop" in reads and _inside_loop(block, scope):
            binds.add("loop")
        clash = sorted(reads & binds)
        if clash:
            parser.fail(
                f"nocache reads {', '.join(map(repr, clash))}, which {tag} "
                f"{name!r} (line {lineno}) sets inside: on a hit the fragment's "
                "body does not run, so it would not exist. Set it before the "
                "fragment.",
                block.lineno,
            )
        blocks[index] = (block.lineno, block.body)
    return blocks


def with_holes(body: list[nodes.Node], hole: str, blocks: Blocks) -> list[nodes.Node]:
    """*body* when the caller's *hole* argument is ``None``, else the body
    of that ``nocache`` block."""
    if not blocks:
        return body
    argument = nodes.Name(hole, "load")
    branches = [
        nodes.If(
            nodes.Compare(argument, [nodes.Operand("eq", nodes.Const(index))]),
            copy.deepcopy(block),
            [],
            [],
        )
        for index, (_, block) in blocks.items()
    ]
    test = nodes.Test(argument, "none", [], [], None, None)
    return [nodes.If(test, body, branches, [])]


def _inside_loop(block: nodes.Node, scope: nodes.Node) -> bool:
    return any(
        any(node is block for node in loop.find_all(nodes.CallBlock))
        for loop in scope.find_all(nodes.For)
    )


def owner(parser: Parser) -> str:
    """Who the ``nocache`` blocks of the template being parsed belong to:
    its name, or, for a template without one, a name of its own."""
    found = getattr(parser, "_fragcache_owner", None)
    if found is None:
        found = parser.name or f"<string {secrets.token_hex(8)}>"
        parser._fragcache_owner = found  # type: ignore[attr-defined]
    return str(found)
