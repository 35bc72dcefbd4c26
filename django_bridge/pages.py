"""The staff-only statistics page (include ``django_bridge.urls``)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import render

from .api import get_cache_stats
from .views import VIEW_PREFIX

#: Geometry of the hit-rate chart, in SVG user units.
LABEL_WIDTH, BAR_WIDTH, ROW_HEIGHT = 220, 360, 22


def stats_page(request: HttpRequest) -> HttpResponse:
    """Server figures, per-fragment and per-view counters, and an SVG chart
    of the hit rate of each, drawn here: no script, no CDN."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if not user.is_staff:
        return HttpResponseForbidden("Staff only.")
    stats = get_cache_stats()
    rows = [
        {
            "name": name.removeprefix(VIEW_PREFIX),
            "kind": "view" if name.startswith(VIEW_PREFIX) else "fragment",
            **figures,
        }
        for name, figures in sorted(
            stats["fragments"].items(),
            key=lambda item: -(int(item[1]["hits"]) + int(item[1]["misses"])),
        )
    ]
    return render(
        request,
        "django_bridge/stats.html",
        {"stats": stats, "rows": rows, "chart": _chart(rows)},
    )


def _chart(rows: list[dict[str, Any]]) -> dict[str, Any]:
    bars = [
        {
            "label": f"{row['kind']} {row['name']}"[:32],
            "y": index * ROW_HEIGHT,
            "width": round(BAR_WIDTH * float(row["hit_rate"]) / 100, 1),
            "rate": f"{float(row['hit_rate']):.0f}%",
        }
        for index, row in enumerate(rows)
    ]
    return {
        "bars": bars,
        "width": LABEL_WIDTH + BAR_WIDTH + 60,
        "height": max(ROW_HEIGHT, ROW_HEIGHT * len(bars)),
        "label_width": LABEL_WIDTH,
        "bar_width": BAR_WIDTH,
        "row_height": ROW_HEIGHT - 4,
        "text_x": LABEL_WIDTH + BAR_WIDTH + 6,
    }
