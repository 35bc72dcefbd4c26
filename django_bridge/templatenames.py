"""Which variables a DTL node list reads, and which it binds.

A ``{% nocache %}`` block is rendered on a hit without the fragment's body,
so it must not read a variable the body binds (a ``for`` variable, a
``with`` name, a ``cache_each`` item, an ``as`` target): the tags check it
at compile time with these.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from django.template.base import FilterExpression, Node, NodeList, Variable
from django.template.defaulttags import ForNode, WithNode

#: Attributes by which tags with ``... as NAME`` keep that name.
_AS_NAMES = ("asvar", "var_name", "variable_name", "target_var", "target")


def nodes_in(nodelist: NodeList) -> list[Node]:
    """Every node of *nodelist*, at any depth."""
    return list(nodelist.get_nodes_by_type(Node))


def bound(nodes: Iterable[Node]) -> set[str]:
    """The names *nodes* bind for the nodes inside them."""
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ForNode):
            names.update(node.loopvars)
            names.add("forloop")
        elif isinstance(node, WithNode):
            names.update(node.extra_context)
        for attribute in _AS_NAMES:
            value = getattr(node, attribute, None)
            if isinstance(value, str) and value:
                names.add(value)
    return names


def read(nodes: Iterable[Node]) -> set[str]:
    """The first part of every variable *nodes* resolve (``user`` of
    ``user.name|default:guest``)."""
    return {
        variable.lookups[0]
        for node in nodes
        for variable in _variables(vars(node).values(), depth=0)
        if variable.lookups
    }


def _variables(values: Iterable[Any], depth: int) -> Iterator[Variable]:
    """The variables in a node's attributes: expressions, their filter
    arguments, and the conditions of ``if`` (kept in smartif objects)."""
    if depth > 6:
        return
    for value in values:
        if isinstance(value, (Node, NodeList, str, bytes)):
            continue  # nested nodes are visited on their own
        if isinstance(value, FilterExpression):
            if isinstance(value.var, Variable):
                yield value.var
            for _, arguments in value.filters:
                yield from (a for _, a in arguments if isinstance(a, Variable))
        elif isinstance(value, Variable):
            yield value
        elif isinstance(value, dict):
            yield from _variables(value.values(), depth + 1)
        elif isinstance(value, (list, tuple)):
            yield from _variables(value, depth + 1)
        elif type(value).__module__.startswith("django.template.smartif"):
            yield from _variables(vars(value).values(), depth + 1)
