"""The vocabulary of a flow: what a lookup's generator yields to its driver,
and what it gets back.

A flow is written once as a generator and driven by
:meth:`~jinja_fragcache.cache.FragmentCache._drive` (sync) or ``_adrive``
(async), which carry out each operation it yields.
"""

from __future__ import annotations

import os
import struct
from collections import deque
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
    while True:
        try:
            return b"%d" % (_words.popleft() >> 2)  # 62 bits
        except IndexError:
            _words.extend(_WORDS.unpack(os.urandom(_WORDS.size)))


#: The operating system's random bytes, 8 at a time: one ``getrandom`` per
#: 512 versions instead of one each.  A deque, so threads never share a word;
#: emptied in a forked child, which must not repeat its parent's.
_words: deque[int] = deque()
_WORDS = struct.Struct("<512Q")
if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_words.clear)
