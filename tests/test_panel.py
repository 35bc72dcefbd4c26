"""The django-debug-toolbar panel lists the lookups of one request."""

from __future__ import annotations

import uuid
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.template.loader import render_to_string
from django.test import RequestFactory

from django_bridge.panels import FragmentCachePanel
from jinja_fragcache.cache import recording


class Toolbar:
    """What a panel keeps its figures in: the toolbar's stats and store."""

    request_id = "test"

    def __init__(self) -> None:
        self.stats: dict[str, Any] = {}
        self.saved: dict[str, Any] = {}
        self.store = self

    def save_panel(self, request_id: str, panel_id: str, stats: dict[str, Any]) -> None:
        self.saved[panel_id] = stats


def test_the_panel_lists_every_lookup_of_the_request(settings: Any) -> None:
    settings.FRAGCACHE = {"KEY_PREFIX": "panel" + uuid.uuid4().hex[:8]}
    page = engines["django"].from_string(
        "{% load cache_tags %}{% cache_fragment 300 sidebar %}s{% endcache_fragment %}"
        "{% cache_each 300 card p in items p %}{{ p }}{% endcache_each %}"
    )
    page.render({"items": [1, 2]})  # the sidebar and card 1, 2 are cached now

    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(page.render({"items": [1, 2, 3]}))

    toolbar = Toolbar()
    panel = FragmentCachePanel(toolbar, view)
    response = panel.process_request(RequestFactory().get("/"))
    assert response.content == b"s123"
    lookups = panel.get_stats()["lookups"]
    assert [(x["name"], x["outcome"], x["variants"]) for x in lookups] == [
        ("sidebar", "hit", 1),
        ("card", "miss", 3),
    ]
    assert lookups[0]["key"].startswith(
        settings.FRAGCACHE["KEY_PREFIX"] + ":2:f:{sidebar}:"
    )
    assert panel.nav_subtitle == "1 of 2 lookups answered from the cache"
    assert toolbar.saved["FragmentCachePanel"]["lookups"] == lookups
    html = render_to_string("django_bridge/panel.html", panel.get_stats())
    assert (
        "<td>sidebar</td><td>hit</td>" in html and "<td>card</td><td>miss</td>" in html
    )


def test_recording_is_scoped_to_its_block() -> None:
    from jinja_fragcache import FragmentCache, FragmentRequest, MemoryBackend

    cache = FragmentCache(MemoryBackend())
    cache.render(FragmentRequest("outside", timeout=60), lambda: "x")
    with recording() as lookups:
        cache.render(FragmentRequest("inside", timeout=60), lambda: "x")
        cache.render(FragmentRequest("inside", timeout=60), lambda: "x")
    cache.render(FragmentRequest("after", timeout=60), lambda: "x")
    assert [(x.name, x.outcome) for x in lookups] == [
        ("inside", "miss"),
        ("inside", "hit"),
    ]
