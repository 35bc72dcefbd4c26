"""The fragment render in progress in this thread or task.

What the fragments inside it report (:func:`~.recording.report`) and the
``{% nocache %}`` blocks it meets (:mod:`.holes`) are kept in *one* context
variable, :data:`current`: every ``ContextVar.set`` and ``reset`` makes a
new context mapping, and a miss sets it once and resets it once.  Each
value is a new immutable :class:`RenderState`, never one changed in place,
so asyncio tasks that share a copied context keep their own.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from .holes import LiveHoles


class RenderState(NamedTuple):
    """A fragment render in progress."""

    #: The versions the fragments rendered so far inside it depend on.
    versions: dict[str, str]
    #: Where its ``{% nocache %}`` blocks record their output: the outermost
    #: fragment's, or :data:`~.holes.OFF` while it renders uncached (or
    #: while a block's own content renders: fragments inside start afresh).
    live: LiveHoles


#: The render in progress; ``None`` outside any fragment.
current: contextvars.ContextVar[RenderState | None] = contextvars.ContextVar(
    "jinja_fragcache_render_state", default=None
)
