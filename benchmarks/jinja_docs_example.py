"""The fragment cache extension from Jinja's documentation, as a peer.

Written from the description in the Jinja docs ("Extensions", "Example
Extensions", "Cache"): ``{% cache "name", timeout %}…{% endcache %}``, keyed on
the name alone (prefixed), with a cachelib-style cache on
``environment.fragment_cache`` that has ``get`` and ``add``.  It has no vary
values, so the benchmark folds the vary value into the name, as its users do.
"""

from __future__ import annotations

from typing import Any

from jinja2 import nodes
from jinja2.ext import Extension


class DocsFragmentCacheExtension(Extension):
    tags = {"cache"}

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        environment.extend(fragment_cache_prefix="", fragment_cache=None)

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        args = [parser.parse_expression()]
        if parser.stream.skip_if("comma"):
            args.append(parser.parse_expression())
        else:
            args.append(nodes.Const(None))
        body = parser.parse_statements(("name:endcache",), drop_needle=True)
        call = self.call_method("_cache_support", args)
        return nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _cache_support(self, name: str, timeout: int | None, caller: Any) -> str:
        key = self.environment.fragment_cache_prefix + name
        cache = self.environment.fragment_cache
        rv = cache.get(key)
        if rv is not None:
            return str(rv)
        rv = caller()
        cache.add(key, rv, timeout)
        return str(rv)
