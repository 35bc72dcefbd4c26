"""The fragment cache extension that Jinja's documentation gives as an example.

Rewritten here from the docs' description ("Extensions", "Example
Extensions", "Cache"), as its readers copy it into their projects:

- the tag is ``{% cache NAME[, TIMEOUT] %}...{% endcache %}``;
- the key is the environment's ``fragment_cache_prefix`` plus NAME, nothing
  else: there are no vary values, so users build them into NAME;
- the cache is whatever object sits on ``environment.fragment_cache`` and has
  ``get(key)`` and ``add(key, value, timeout)``, such as a cachelib cache;
- a miss renders the body and ``add``s it; nothing else (no versions, no
  lock, no stale copy).
"""

from __future__ import annotations

from typing import Any

from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.parser import Parser


class DocsFragmentCacheExtension(Extension):
    tags = {"cache"}

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        # Configuration lives on the environment, with defaults set here.
        environment.extend(fragment_cache_prefix="", fragment_cache=None)

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        name = parser.parse_expression()
        timeout: nodes.Expr = nodes.Const(None)
        if parser.stream.skip_if("comma"):
            timeout = parser.parse_expression()
        body = parser.parse_statements(("name:endcache",), drop_needle=True)
        lookup = self.call_method("_lookup_or_render", [name, timeout])
        return nodes.CallBlock(lookup, [], [], body).set_lineno(lineno)

    def _lookup_or_render(self, name: str, timeout: int | None, caller: Any) -> Any:
        store = self.environment.fragment_cache  # type: ignore[attr-defined]
        key = self.environment.fragment_cache_prefix + name  # type: ignore[attr-defined]
        cached = store.get(key)
        if cached is not None:
            return cached
        rendered = caller()
        store.add(key, rendered, timeout)
        return rendered
