"""Our tags under Django, through ``django_bridge``: the DTL twins
(``{% load cache_tags %}``) and the Jinja2 engine of Django's own backend
with ``django_bridge.jinja2.environment``.

Both use the cache that ``FRAGCACHE`` names (``default``; see
``benchmarks/django_settings.py``): the native path on django-redis, the
Django cache adapter on LocMemCache.  They are not columns of the main
table: ``benchmarks.under_django`` times their hits against Django's
``{% cache %}`` on the same alias.
"""

from __future__ import annotations

from typing import Any

from .base import CARD, FRAGMENT, TIMEOUT, Adapter


class BridgeDTL(Adapter):
    name = "DTL cache_fragment"
    engine = "django"
    load = "{% load cache_tags %}"
    #: Its own name, so that it never hits the Jinja2 twin's entry.
    fragment_name = "dtlfrag"

    def setup(self) -> None:
        from django.template import engines

        self.compile(
            engines[self.engine].from_string,
            self.load
            + f"{{% cache_fragment {TIMEOUT} {self.fragment_name} uid %}}"
            + FRAGMENT
            + "{% endcache_fragment %}",
            self.load
            + f"{{% cache_each {TIMEOUT} card item in items item.id %}}"
            + CARD
            + "{% endcache_each %}",
        )

    def backend(self) -> Any:
        from django_bridge import get_fragment_cache

        return get_fragment_cache().backend


class BridgeJinja(BridgeDTL):
    name = "Jinja2 cache_fragment"
    engine = "jinja2"
    load = ""
    fragment_name = "jfrag"
