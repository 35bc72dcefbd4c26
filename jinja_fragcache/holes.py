"""Holes: the per-request parts of a cached body, filled in on the way out.

A stored body is the rendered output with every per-request value (the
Django bridge's CSRF token, say) replaced by a named hole, so the entry can
be shared and each request still gets its own value.  The encoding is
injective, so no rendered text can pass for a hole:

- ``"\\x00"`` in the output is stored as ``"\\x00\\x00"``;
- a hole named ``name`` (``[a-z_]+``) is stored as ``"\\x00name\\x00"``.

A :class:`HoleFiller` decides where the holes go (:meth:`~HoleFiller.punch`,
before an entry is stored) and what fills them (:meth:`~HoleFiller.fill`,
for each request that reads one).  Without a filler, bodies are only
escaped, and a hole is never made.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .requests import FragmentRequest

MARK = "\x00"
_NAME_RE = re.compile(r"[a-z_]+\Z")
_STORED_RE = re.compile("\x00([a-z_]*)\x00")


class HoleFiller(Protocol):
    """Where a cache's holes go, and what fills them."""

    def punch(self, request: FragmentRequest, stored: str) -> str:
        """Return *stored* (already :func:`escape`\\ d) with this request's
        per-request values replaced by :func:`hole`\\ s."""

    def fill(self, request: FragmentRequest, name: str) -> str:
        """The value of hole *name* for *request*."""


def hole(name: str) -> str:
    """The stored form of hole *name*."""
    if not _NAME_RE.match(name):
        raise ValueError(f"a hole name is [a-z_]+, got {name!r}")
    return f"{MARK}{name}{MARK}"


def escape(body: str) -> str:
    """*body* as it is stored, before any hole is punched."""
    return body.replace(MARK, MARK + MARK) if MARK in body else body


def fill(stored: str, value: Callable[[str], str]) -> str:
    """The output of a stored body: each hole replaced by ``value(name)``."""
    if MARK not in stored:
        return stored
    return _STORED_RE.sub(lambda m: value(m[1]) if m[1] else MARK, stored)
