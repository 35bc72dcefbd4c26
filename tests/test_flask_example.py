"""The Flask example, driven through Flask's test client."""

from __future__ import annotations

from typing import Any

import pytest
from cachelib import SimpleCache

from examples.flask_app import create_app
from jinja_fragcache import CachelibBackend, FragmentCache, RedisBackend


@pytest.fixture(params=["cachelib", "redis"])
def cache(request: pytest.FixtureRequest, unique_prefix: str) -> FragmentCache:
    if request.param == "cachelib":
        return FragmentCache(CachelibBackend(SimpleCache()), prefix=unique_prefix)
    backend: Any = request.getfixturevalue("redis_backend")
    assert isinstance(backend, RedisBackend)
    return FragmentCache(backend, prefix=unique_prefix)


def test_pages_are_cached_and_a_save_invalidates_one_card(cache: FragmentCache) -> None:
    app = create_app(cache)
    client = app.test_client()
    first = client.get("/").get_data(as_text=True)
    assert "Cup: 5 EUR" in first
    app.config["PRODUCTS"][3]["price"] = 99  # changed behind the cache's back
    assert client.get("/").get_data(as_text=True) == first
    response = client.post("/products/2", data={"price": "6"})
    assert response.status_code == 302
    page = client.get("/").get_data(as_text=True)
    assert "Cup: 6 EUR" in page  # the saved card re-rendered, and the page around it
    assert "Saucer: 3 EUR" in page  # the untouched card stayed cached
    stats = client.get("/stats").get_json()["fragments"]
    assert stats["card"]["renders"] == 4
    assert stats["catalogue"]["renders"] == 2
