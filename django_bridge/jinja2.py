"""A Jinja2 environment factory for Django's own Jinja2 backend.

    TEMPLATES = [{
        "BACKEND": "django.template.backends.jinja2.Jinja2",
        "OPTIONS": {"environment": "django_bridge.jinja2.environment"},
    }]

Django's backend keeps ``request``, ``csrf_input`` and ``csrf_token`` in
every template's context, as usual.  Every option Django passes, and any you
add (``block_start_string="<%"``, ``extensions=[...]``…), is kept.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment

from jinja_fragcache import FragmentCacheExtension

from .cache import get_fragment_cache

EXTENSION = "jinja_fragcache.ext.FragmentCacheExtension"


def environment(**options: Any) -> Environment:
    """An :class:`~jinja2.Environment` with the fragment cache tags, on the
    cache that ``FRAGCACHE`` names, read at every render."""
    extensions = list(options.pop("extensions", ()))
    if EXTENSION not in extensions and FragmentCacheExtension not in extensions:
        extensions.append(EXTENSION)
    env = Environment(extensions=extensions, **options)
    env.fragment_cache = get_fragment_cache  # type: ignore[attr-defined]
    return env
