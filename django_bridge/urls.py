"""``path("cache/", include("django_bridge.urls"))`` mounts the stats page."""

from __future__ import annotations

from django.urls import path

from .pages import stats_page

app_name = "fragcache"
urlpatterns = [path("", stats_page, name="stats")]
