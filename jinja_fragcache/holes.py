"""Holes: the per-request parts of a cached body, filled in on the way out.

A stored body is the rendered output with every per-request part replaced
by a named hole, so the entry can be shared and each request still gets its
own value.  There are two kinds, one mechanism:

- a ``{% nocache %}`` block, named by its index in its template (``"3"``);
  it is rendered again, with the request's context, whenever the entry is
  read;
- a value the system fills (the Django bridge's CSRF token,
  ``"csrf_token"``), punched out of the output by a :class:`HoleFiller`.

The stored form is a sequence of segments, literal text and hole
references, written with an injective encoding, so no rendered text can
pass for a hole:

- ``"\\x00"`` in the output is stored as ``"\\x00\\x00"``;
- a hole named ``name`` (``[a-z_]+`` or digits) is stored as
  ``"\\x00name\\x00"``.

While a fragment renders, a ``{% nocache %}`` block inside it outputs its
own content *and* records it in the :class:`LiveHoles` of the outermost
fragment rendering (:data:`.render_state.current`), leaving a marker in
the output.  A marker
holds a nonce drawn for that render, which no template can know, so the
output can be cut into segments without trusting its content.  The
fragment's stored body gets a hole where the marker was, and the response
gets the content.
"""

from __future__ import annotations

import contextvars
import re
import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from .backends.base import made
from .render_state import RenderState, current

if TYPE_CHECKING:
    from .requests import FragmentRequest

MARK = "\x00"
_NAME_RE = re.compile(r"[a-z_]+\Z")
_STORED_RE = re.compile("\x00([a-z_0-9]*)\x00")


class Unfilled(Exception):
    """A hole that cannot be filled for this request: the fragment is
    rendered uncached instead, so no placeholder reaches a client."""


class HoleFiller(Protocol):
    """Where a cache's system holes go, and what fills them."""

    def punch(self, request: FragmentRequest, stored: str) -> str:
        """Return *stored* (already :func:`escape`\\ d) with this request's
        per-request values replaced by :func:`hole`\\ s."""

    def fill(self, request: FragmentRequest, name: str) -> str:
        """The value of hole *name* for *request*; :class:`Unfilled` if it
        has none."""


class HoleTable:
    """The ``{% nocache %}`` blocks inside one fragment tag.

    :param owner: the template they belong to, as its tag knows it at
        compile time: a marker of another template (an ``include``, an
        imported macro) cannot be filled by this tag on a hit.
    :param lines: each block's index in its template, with its line.
    :param render: ``render(index)`` renders that block with the context
        the fragment tag sees (awaitable in an async environment).  A tag
        whose blocks render through a caller that exists only once the
        lookup missed sets it then.
    """

    __slots__ = ("lines", "owner", "render")

    def __init__(
        self,
        owner: str,
        lines: Mapping[int, int],
        render: Callable[[int], Any] | None = None,
    ) -> None:
        self.owner = owner
        self.lines = lines
        self.render: Callable[[int], Any] = render or _not_yet

    def __repr__(self) -> str:
        return f"<HoleTable {self.owner!r} {dict(self.lines)!r}>"


def _not_yet(index: int) -> str:
    raise RuntimeError(f"{{% nocache %}} block {index} has no renderer yet")


def hole(name: str) -> str:
    """The stored form of system hole *name*."""
    if not _NAME_RE.match(name):
        raise ValueError(f"a hole name is [a-z_]+, got {name!r}")
    return f"{MARK}{name}{MARK}"


def escape(body: str) -> str:
    """*body* as it is stored, before any hole is punched."""
    return body.replace(MARK, MARK + MARK) if MARK in body else body


class Cut(NamedTuple):
    """A stored body cut at its holes."""

    #: Text, hole name, text, ..., text: an odd count, the texts unescaped.
    parts: tuple[str, ...]
    #: The ``{% nocache %}`` blocks among the holes, each once.
    blocks: tuple[int, ...]
    #: Each hole's place in :attr:`parts`, and what fills it: a block's
    #: number, or a system hole's name.
    holes: tuple[tuple[int, int | str], ...]


def cut(stored: str) -> Cut:
    """*stored* cut at its holes.  Kept for the bodies read recently, so a
    hit on the same entry cuts it once."""
    found = _cuts.get(stored)
    if found is None:
        found = _cut(stored)
        if _cuts.size + len(stored) > _CUT_BUDGET:
            _cuts.clear()  # O(1) and lock-free; the next hits cut again
        _cuts[stored] = found
        _cuts.size += len(stored)
    return found


class _Cuts(dict[str, Cut]):
    size = 0

    def clear(self) -> None:
        super().clear()
        self.size = 0


_cuts = _Cuts()
_CUT_BUDGET = 8 * 1024 * 1024  # characters of the bodies kept


def _cut(stored: str) -> Cut:
    pieces = _STORED_RE.split(stored)
    parts = [pieces[0]]
    for i in range(1, len(pieces), 2):
        if pieces[i]:
            parts += (pieces[i], pieces[i + 1])
        else:  # an escaped "\x00" belongs to the text
            parts[-1] += MARK + pieces[i + 1]
    filled_by = [
        (i, int(name) if name.isdigit() else name)
        for i, name in enumerate(parts)
        if i % 2
    ]
    blocks = dict.fromkeys(name for _, name in filled_by if type(name) is int)
    return Cut(tuple(parts), tuple(blocks), tuple(filled_by))


def fill(stored: str, value: Callable[[str], str]) -> str:
    """The output of a stored body: each hole replaced by ``value(name)``."""
    if MARK not in stored:
        return stored
    parts = list(cut(stored).parts)
    for i in range(1, len(parts), 2):
        parts[i] = value(parts[i])
    return "".join(parts)


class _Met(NamedTuple):
    owner: str
    block: int
    output: str


class LiveHoles:
    """The ``{% nocache %}`` blocks met while one outermost fragment
    renders, with what each rendered.

    The render in progress holds its own (:data:`.render_state.current`):
    :data:`OFF` while a fragment renders uncached; outside any fragment
    there is none, and a block outputs its content, nothing else.
    """

    __slots__ = ("_damaged", "_nonce", "_pattern", "met")

    def __init__(self) -> None:
        self._nonce = ""
        self._pattern: re.Pattern[str] | None = None
        self._damaged: re.Pattern[str] | None = None
        self.met: list[_Met] = []

    def mark(self, owner: str, index: int, output: str) -> str:
        """The marker that stands for block *index*'s *output* in the
        output of the fragments around it."""
        if not self._nonce:
            self._nonce = secrets.token_hex(16)
        self.met.append(_Met(owner, index, str(output)))
        return f"{MARK}{self._nonce}{len(self.met) - 1}{MARK}"

    def _segments(self, body: str) -> list[str]:
        """*body* cut at its markers: text, marker number, text, ...

        :raises Unfilled: when a marker was damaged on its way here (a
            filter applied to the block's output, say), since the body
            could not be rebuilt without one reaching the client.
        """
        if self._pattern is None:
            self._pattern = re.compile(f"{MARK}{self._nonce}([0-9]+){MARK}")
            # What is left of a marker a filter changed (upper, truncate).
            self._damaged = re.compile(f"{MARK}{self._nonce[:6]}", re.I)
        segments = self._pattern.split(body)
        numbers = segments[1::2]
        damaged = self._damaged
        assert damaged is not None
        if any(int(n) >= len(self.met) for n in numbers) or any(
            damaged.search(text) for text in segments[::2]
        ):
            raise Unfilled("a {% nocache %} marker was altered before it was filled")
        return segments

    def served(self, body: str) -> str:
        """*body* with every marker replaced by its block's output."""
        if not self.met:
            return body
        segments = self._segments(body)
        for i in range(1, len(segments), 2):
            segments[i] = self.met[int(segments[i])].output
        return "".join(segments)

    def sealed(self, body: str, table: HoleTable | None) -> str | None:
        """*body* in its stored form, each marker a hole of *table*; ``None``
        when a marker belongs to a block *table* cannot render (inside an
        ``include``d template or a macro defined elsewhere): then the
        fragment must not be stored for this render."""
        if not self.met or not self._nonce or self._nonce not in body:
            return escape(body)
        segments = self._segments(body)
        for i in range(0, len(segments), 2):
            segments[i] = escape(segments[i])
        for i in range(1, len(segments), 2):
            met = self.met[int(segments[i])]
            ours = table is not None and met.owner == table.owner
            if not ours or met.block not in table.lines:  # type: ignore[union-attr]
                return None
            segments[i] = f"{MARK}{met.block}{MARK}"
        return "".join(segments)


#: A fragment that renders uncached: its blocks output their content only.
OFF = LiveHoles()


def apart(state: RenderState) -> contextvars.Token[RenderState | None]:
    """Start rendering a ``{% nocache %}`` block's content inside the
    render *state*: the fragments inside start afresh (their holes are
    their own), and still report their versions to it.  Reset the token
    after."""
    return current.set(made(RenderState, (state.versions, OFF)))


def output(owner: str, index: int, rendered: str) -> str:
    """What a ``{% nocache %}`` block outputs where it stands: its content,
    or the marker of its content while a fragment around it renders."""
    state = current.get()
    if state is None or state.live is OFF:
        return rendered
    return state.live.mark(owner, index, rendered)
