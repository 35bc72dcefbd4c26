"""The vocabulary of a flow: what a lookup's generator yields to its driver,
and what it gets back.

A flow is written once as a generator and driven by
:meth:`~jinja_fragcache.cache.FragmentCache._drive` (sync) or ``_adrive``
(async), which carry out each operation it yields.
"""

from __future__ import annotations

import secrets
from collections.abc import Generator
from typing import Any, NamedTuple

from .holes import LiveHoles

#: What a backend call returns to the flow when the backend failed or the
#: circuit breaker is open.
FAILED: Any = object()

# An instruction from the flow to its driver: ("get_many", keys),
# ("add_many", mapping, timeout), ("set_many", mapping, timeout),
# ("delete", key), ("render", indices), ("open", index, stored) (fill the
# holes of request index's stored body) or ("sleep", seconds).
Op = tuple[Any, ...]
Gen = Generator[Op, Any, Any]


class Rendered(NamedTuple):
    """One render of a fragment's body.

    *body* is what it outputs.  When ``{% nocache %}`` blocks rendered
    inside, *live* holds their outputs and *marked* is the output with
    their markers (see :mod:`.holes`), from which the stored form is made;
    *body* is then filled in, unless a fragment around this one renders
    too (the outermost one fills them).
    """

    body: str
    versions: dict[str, str]
    seconds: float
    live: LiveHoles | None = None
    marked: str | None = None
    #: Why the blocks' markers could not be filled, if they could not: the
    #: body was rendered again, uncached, with their content in place.
    unfilled: str = ""


def new_version() -> bytes:
    # Unpredictable, so a counter lost to eviction and created again can
    # never match the version an old entry recorded.
    return str(secrets.randbits(62)).encode("ascii")
