"""Standalone demo: Jinja2 + jinja-fragcache on the embedded in-process cache.

Run it with ``python3 examples/standalone_demo.py``: no server is needed.
It renders a page whose sidebar and product cards are slow to build, shows
a miss and a hit with their timings, invalidates, and shows the re-render.
"""

from __future__ import annotations

import time

from jinja2 import DictLoader, Environment

from jinja_fragcache import (
    FragmentCacheExtension,
    get_default_cache,
    invalidate_fragment,
)

# The product is specified with <% %> block delimiters; {% %} works the same.
TEMPLATES = {
    "page.html": """\
<h1>Shop</h1>
<% cache_fragment 300 sidebar user_lang tags="nav" %>
<nav>{{ slow_menu(user_lang) }}</nav>
<% endcache_fragment %>
<% cache_each 300 card product in products product.id %>
<div class="card">{{ slow_card(product) }}</div>
<% endcache_each %>
<small>key of card 2: <% cache_key_for card 2 %></small>
""",
}

renders: list[str] = []


def slow_menu(lang: str) -> str:
    renders.append("menu")
    time.sleep(0.05)  # a database query, say
    return f"menu ({lang})"


def slow_card(product: dict[str, object]) -> str:
    renders.append(f"card {product['id']}")
    time.sleep(0.01)
    return f"{product['name']}: {product['price']} EUR"


def main() -> None:
    env = Environment(
        loader=DictLoader(TEMPLATES),
        extensions=[FragmentCacheExtension],
        block_start_string="<%",
        block_end_string="%>",
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # No configuration: the process default cache, in memory, is used.
    page = env.get_template("page.html")
    products = [
        {"id": 1, "name": "Teapot", "price": 20},
        {"id": 2, "name": "Cup", "price": 5},
        {"id": 3, "name": "Saucer", "price": 3},
    ]

    def show(label: str) -> str:
        renders.clear()
        start = time.perf_counter()
        html = page.render(
            user_lang="en", products=products, slow_menu=slow_menu, slow_card=slow_card
        )
        ms = (time.perf_counter() - start) * 1000
        print(f"{label:<32} {ms:8.2f} ms   rendered: {', '.join(renders) or 'nothing'}")
        return html

    first = show("1. cold cache (miss)")
    second = show("2. warm cache (hit)")
    assert first == second
    products[1]["price"] = 6
    invalidate_fragment("card", 2)  # what a view does after saving product 2
    third = show("3. after invalidating card 2")
    assert "Cup: 6 EUR" in third
    get_default_cache().invalidate_tags("nav")
    show("4. after invalidating tag 'nav'")
    show("5. warm again (hit)")
    print()
    print(third)
    print("stats:")
    for name, figures in get_default_cache().stats().items():
        print(
            f"  {name:<8} hits={figures['hits']} misses={figures['misses']} "
            f"renders={figures['renders']} hit_rate={figures['hit_rate']:.0f}%"
        )


if __name__ == "__main__":
    main()
