"""A Flask app whose templates cache fragments with jinja-fragcache.

Run it with ``flask --app examples.flask_app run`` from the repository root.
It uses Redis when ``REDIS_URL`` is set, otherwise cachelib's in-process
``SimpleCache``.  Saving a product invalidates exactly that product's card;
the page around it, which nests the cards, re-renders on its next request.
"""

from __future__ import annotations

import os

from flask import Flask, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from jinja_fragcache import FragmentCache, FragmentCacheExtension, invalidate_fragment


def make_cache() -> FragmentCache:
    url = os.environ.get("REDIS_URL")
    if url:
        from jinja_fragcache import RedisBackend

        return FragmentCache(RedisBackend.from_url(url), prefix="flaskdemo")
    from cachelib import SimpleCache

    from jinja_fragcache import CachelibBackend

    return FragmentCache(
        CachelibBackend(SimpleCache(threshold=5000)), prefix="flaskdemo"
    )


def create_app(cache: FragmentCache | None = None) -> Flask:
    app = Flask(__name__, template_folder="flask_templates")
    # The product is specified with <% %> block delimiters.
    app.jinja_options = {
        "extensions": [FragmentCacheExtension],
        "block_start_string": "<%",
        "block_end_string": "%>",
        "trim_blocks": True,
        "lstrip_blocks": True,
    }
    fragment_cache = cache or make_cache()
    app.jinja_env.fragment_cache = fragment_cache  # type: ignore[attr-defined]
    app.extensions["fragment_cache"] = fragment_cache
    products = {
        1: {"id": 1, "name": "Teapot", "price": 20},
        2: {"id": 2, "name": "Cup", "price": 5},
        3: {"id": 3, "name": "Saucer", "price": 3},
    }
    app.config["PRODUCTS"] = products

    @app.get("/")
    def index() -> str:
        return render_template("index.html", products=list(products.values()))

    @app.post("/products/<int:pid>")
    def update_product(pid: int) -> Response:
        products[pid]["price"] = int(request.form["price"])
        # The fragment was stored under the int id; the str() rule makes
        # any spelling of it reach the same entry.
        invalidate_fragment("card", pid, cache=fragment_cache)
        return redirect(url_for("index"))

    @app.get("/stats")
    def stats() -> dict[str, object]:
        return {"fragments": fragment_cache.stats()}

    return app


if __name__ == "__main__":
    create_app().run(debug=True)
