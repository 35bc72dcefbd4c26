"""The stored form of a fragment, and the versions it depends on.

An entry is bytes this library wrote itself, never a pickle: one ASCII
header line, then the body::

    FC2 <soft expiry> <digest> <template> [<counter key> <version>]...\\n<body>

- soft expiry: Unix seconds as a float, to the millisecond, ``-`` for never.
  Past it the entry is *stale*: served while one renderer refreshes it.
- digest, template: the digest of the block and the template that wrote it,
  ``-`` when empty; the template name is percent-encoded.
- counter key / version pairs: every version counter the entry depends on,
  its own and those of the fragments nested inside it, with the value each
  had before the render.  Keys and versions never contain spaces.
- the body: the rendered output in its stored form (escaped, with holes for
  per-request values: :mod:`jinja_fragcache.holes`), UTF-8 (a lone
  surrogate is kept, as ``surrogatepass`` writes it).

The header is split on spaces, not parsed as JSON: a hit decodes in about a
microsecond, and the body is never copied through a parser.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import quote, unquote

MAGIC = b"FC2 "
#: Headers of older releases: their entries are misses, never misread (FC1
#: bodies were not escaped for holes).
OUTDATED = (b"FC1 ",)
_EMPTY = "-"


class CorruptEntryError(ValueError):
    """A value under a fragment key that this version did not write."""


class OutdatedEntryError(CorruptEntryError):
    """An entry an older release wrote: ignored quietly, then replaced."""


def judge(
    data: bytes | Entry | None, current: Callable[[str], bytes | None], now: float
) -> str:
    """What a backend that claims in its first read (see
    :class:`~.backends.base.ClaimingRead`) makes of stored *data*:
    ``"fresh"``, ``"stale"`` (its counters match, its soft expiry passed)
    or ``"cold"`` (missing, unreadable, or a counter it recorded has
    changed).  *current* gives a counter's value now.  The header alone is
    read, as the Lua script ``READ_CLAIMING`` reads it.  An in-process
    backend's *data* may be the :class:`Entry` itself."""
    if isinstance(data, Entry):
        for key, version in data.versions.items():
            if current(key) != version.encode("ascii"):
                return "cold"
        return "fresh" if data.is_fresh(now) else "stale"
    if data is None or not data.startswith(MAGIC):
        return "cold"
    end = data.find(b"\n")
    fields = data[len(MAGIC) : end].split(b" ") if end > 0 else []
    if len(fields) < 3 or len(fields) % 2 == 0:
        return "cold"
    for i in range(3, len(fields), 2):
        if current(fields[i].decode("ascii", "replace")) != fields[i + 1]:
            return "cold"
    expiry = fields[0]
    try:
        return "fresh" if expiry == b"-" or now < float(expiry) else "stale"
    except ValueError:
        return "stale"


@functools.lru_cache(maxsize=256)
def _quoted(template: str) -> str:
    """A template's name as an entry's header holds it (a page has few)."""
    return quote(template, safe="/._", errors="surrogatepass") or _EMPTY


class Entry(NamedTuple):
    body: str
    soft_expiry: float | None
    template: str = ""
    digest: str = ""
    versions: dict[str, str] = {}  # noqa: RUF012 - never mutated

    def is_fresh(self, now: float) -> bool:
        return self.soft_expiry is None or now < self.soft_expiry

    def encode(self) -> bytes:
        fields = [
            # To the millisecond: a float's shortest repr costs four times as
            # much, on every miss.
            _EMPTY if self.soft_expiry is None else f"{self.soft_expiry:.3f}",
            self.digest or _EMPTY,
            _quoted(self.template),
        ]
        for key, version in self.versions.items():
            fields += (key, version)
        header = " ".join(fields).encode("ascii")
        # surrogatepass: Jinja renders a lone surrogate ("a\udcffb") happily,
        # so the entry must hold it as it was.
        body = self.body.encode("utf-8", "surrogatepass")
        return b"".join((MAGIC, header, b"\n", body))

    @classmethod
    def decode(cls, data: bytes | Entry) -> Entry:
        """Parse what :meth:`encode` wrote (an entry that an in-process
        backend kept as it is is returned as it is).

        :raises CorruptEntryError: for anything else, whoever wrote it.
        """
        if isinstance(data, Entry):
            return data
        if not data.startswith(MAGIC):
            if data.startswith(OUTDATED):
                raise OutdatedEntryError("written by an older release")
            raise CorruptEntryError("not a fragment cache entry")
        end = data.find(b"\n")
        if end < 0:
            raise CorruptEntryError("truncated fragment cache entry")
        try:
            fields = data[len(MAGIC) : end].decode("ascii").split(" ")
            expiry, digest, template = fields[:3]
            soft_expiry = None if expiry == _EMPTY else float(expiry)
            body = data[end + 1 :].decode("utf-8", "surrogatepass")
        except (ValueError, TypeError) as exc:  # includes UnicodeDecodeError
            raise CorruptEntryError(f"unreadable fragment cache entry: {exc}") from exc
        if len(fields) % 2 == 0:
            raise CorruptEntryError("malformed fragment cache entry header")
        pairs = iter(fields[3:])
        decoded = (
            body,
            soft_expiry,
            "" if template == _EMPTY else unquote(template, errors="surrogatepass"),
            "" if digest == _EMPTY else digest,
            dict(zip(pairs, pairs, strict=False)),  # key, version; count checked
        )
        # Every field given: tuple.__new__, not the NamedTuple's own (a
        # Python function, on every entry decoded).
        return tuple.__new__(cls, decoded)
