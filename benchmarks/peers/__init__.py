"""One adapter per implementation, all with the same interface (see ``base``).

Django must be configured (``benchmarks.django_settings.configure``) before
:func:`adapters` runs: django-jinja's extension reads settings on import.
"""

from __future__ import annotations

from .base import Adapter


def adapter_classes() -> list[type[Adapter]]:
    """Ours first, then the peers, in the order of the table's columns."""
    from .django_jinja_tag import DjangoJinjaTag
    from .django_tag import DjangoBuiltinRedisTag, DjangoTag
    from .flask_tag import FlaskCachingTag
    from .jinja_docs import JinjaDocsExample
    from .ours import Ours

    return [
        Ours,
        DjangoTag,
        DjangoJinjaTag,
        FlaskCachingTag,
        JinjaDocsExample,
        DjangoBuiltinRedisTag,
    ]


def adapters(kind: str, redis_url: str) -> list[Adapter]:
    """Every adapter that runs on *kind*, not yet set up."""
    return [cls(kind, redis_url) for cls in adapter_classes() if kind in cls.kinds]


def names() -> list[str]:
    return [cls.name for cls in adapter_classes()]
