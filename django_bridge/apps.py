from __future__ import annotations

from django.apps import AppConfig


class FragmentCacheConfig(AppConfig):
    name = "django_bridge"
    verbose_name = "Fragment cache"

    def ready(self) -> None:
        from . import checks, stats  # noqa: F401 - register checks and signals
