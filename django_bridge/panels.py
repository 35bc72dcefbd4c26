"""A django-debug-toolbar panel: the fragments of the current page.

    DEBUG_TOOLBAR_PANELS = [..., "django_bridge.panels.FragmentCachePanel"]

Importable only where django-debug-toolbar is installed.
"""

from __future__ import annotations

from typing import Any

from debug_toolbar.panels import Panel

from jinja_fragcache.cache import recording


class FragmentCachePanel(Panel):
    """Each lookup of the request: name, key, hit/miss/stale, render and
    fetch milliseconds."""

    title = "Fragment cache"
    template = "django_bridge/panel.html"

    @property
    def nav_subtitle(self) -> str:
        lookups = self.get_stats().get("lookups", [])  # type: ignore[no-untyped-call]
        hits = sum(1 for lookup in lookups if lookup["outcome"] in ("hit", "stale"))
        return f"{hits} of {len(lookups)} lookups answered from the cache"

    def process_request(self, request: Any) -> Any:
        with recording() as lookups:
            response = super().process_request(request)  # type: ignore[no-untyped-call]
        stats = {"lookups": [lookup._asdict() for lookup in lookups]}
        self.record_stats(stats)  # type: ignore[no-untyped-call]
        return response
