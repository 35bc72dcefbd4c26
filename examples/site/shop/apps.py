from __future__ import annotations

from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "examples.site.shop"
    label = "shop"

    def ready(self) -> None:
        from django_bridge import invalidate_on_save

        from . import warmers  # noqa: F401 - registers the warming scopes
        from .models import Entry

        # Saving an entry clears every fragment and page tagged with it.
        invalidate_on_save(Entry, tags=lambda e: ["entries", f"entry-{e.pk}"])
