"""Our tags under Django against Django's ``{% cache %}``, on one cache alias.

Five renders take turns batch by batch: the one-fragment hit of our DTL tag,
of our Jinja2 tag in Django's Jinja2 engine (both through ``django_bridge``,
on ``default``), of Django's ``{% cache %}`` on that same ``default``; and
the uncached DTL and Jinja2 pages.  What a hit costs over its engine's
uncached page is the median of the per-round differences, so the machine's
drift cancels out, as in the main run's 8 µs check.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

from .peers.base import Adapter
from .peers.bridge import BridgeDTL, BridgeJinja
from .timing import sample
from .traffic import redis_commands

if TYPE_CHECKING:
    from .worker import Plan

#: Django's ``{% cache %}``, as the table names it.
DJANGO = "django {% cache %}"
#: The bridge's backend on each kind: the point of the table.
EXPECTED_BACKEND = {"memory": "DjangoCacheBackend", "redis": "DjangoRedisBackend"}


def measure(kind: str, django_tag: Adapter, plan: Plan) -> dict[str, Any]:
    """``{"backend": ..., "hit": {...}, "uncached": {...}, "over uncached":
    {...}}`` in µs; on Redis also ``"commands"`` per hit."""
    dtl, jinja = BridgeDTL(kind, django_tag.redis_url), BridgeJinja(kind, "")
    dtl.setup()
    jinja.setup()
    backend = type(dtl.backend()).__name__
    # The native path on django-redis, the adapter on LocMemCache: anything
    # else would time something other than what the table says.
    assert backend == EXPECTED_BACKEND[kind], (kind, backend)
    for adapter in (dtl, jinja, django_tag):
        adapter.render_hit()  # cached
        got, expected = adapter.render_hit(), django_tag.render_uncached()
        assert got == expected, f"{adapter.name} hit: {got[:200]!r}"
    samples = sample(
        {
            dtl.name: dtl.render_hit,
            jinja.name: jinja.render_hit,
            DJANGO: django_tag.render_hit,
            "DTL": dtl.render_uncached,
            "Jinja2": jinja.render_uncached,
        },
        # Half the main table's batches (still hundreds of renders each):
        # what keeps the full run within about 4 minutes.
        batch_seconds=plan.batch_seconds / 2,
        rounds=plan.rounds,
    )
    medians = {name: statistics.median(values) for name, values in samples.items()}

    def over(hit: str, page: str) -> float:
        return statistics.median(
            h - p for h, p in zip(samples[hit], samples[page], strict=True)
        )

    result: dict[str, Any] = {
        "backend": backend,
        "hit": {name: medians[name] for name in (dtl.name, jinja.name, DJANGO)},
        "uncached": {"DTL": medians["DTL"], "Jinja2": medians["Jinja2"]},
        "over uncached": {
            dtl.name: over(dtl.name, "DTL"),
            jinja.name: over(jinja.name, "Jinja2"),
            DJANGO: over(DJANGO, "DTL"),
        },
    }
    if kind == "redis":
        counted = redis_commands(
            [dtl, jinja, django_tag], django_tag.redis_url, {"hit": "render_hit"}
        )["hit"]
        result["commands"] = {
            DJANGO if name == django_tag.name else name: row
            for name, row in counted.items()
        }
    return result
