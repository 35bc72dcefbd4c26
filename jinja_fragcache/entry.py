"""The stored form of a fragment, and the versions it depends on.

An entry is bytes this library wrote itself, never a pickle::

    FC1\\n{"e": 1732420000.5, "t": "page.html", "d": "9f…", "v": {…}}\\n<body>

- ``e``: the soft expiry, in Unix seconds (``null``: never).  Past it the
  entry is *stale*: served while one renderer refreshes it.
- ``t``, ``d``: the template that wrote it and the digest of its block.
- ``v``: every version counter the entry depends on, its own and those of the
  fragments nested inside it, with the value each had before the render.
- the body: the rendered output, UTF-8.

The header is JSON on one line (JSON escapes newlines), so the body needs no
escaping and a hit decodes without copying it through a parser.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

MAGIC = b"FC1\n"


class CorruptEntryError(ValueError):
    """A value under a fragment key that this version did not write."""


@dataclass(frozen=True, slots=True)
class Entry:
    body: str
    soft_expiry: float | None
    template: str = ""
    digest: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    def is_fresh(self, now: float) -> bool:
        return self.soft_expiry is None or now < self.soft_expiry

    def encode(self) -> bytes:
        header = json.dumps(
            {
                "e": self.soft_expiry,
                "t": self.template,
                "d": self.digest,
                "v": self.versions,
            },
            separators=(",", ":"),
            ensure_ascii=True,
        )
        return b"".join(
            (MAGIC, header.encode("ascii"), b"\n", self.body.encode("utf-8"))
        )

    @classmethod
    def decode(cls, data: bytes) -> Entry:
        """Parse what :meth:`encode` wrote.

        :raises CorruptEntryError: for anything else, whoever wrote it.
        """
        if not data.startswith(MAGIC):
            raise CorruptEntryError("not a fragment cache entry")
        end = data.find(b"\n", len(MAGIC))
        if end < 0:
            raise CorruptEntryError("truncated fragment cache entry")
        try:
            header = json.loads(data[len(MAGIC) : end])
            body = data[end + 1 :].decode("utf-8")
            soft_expiry = header["e"]
            template = header["t"]
            digest = header["d"]
            versions = header["v"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptEntryError(f"unreadable fragment cache entry: {exc}") from exc
        if not (
            (soft_expiry is None or isinstance(soft_expiry, int | float))
            and isinstance(template, str)
            and isinstance(digest, str)
            and isinstance(versions, dict)
            and all(isinstance(v, str) for v in versions.values())
        ):
            raise CorruptEntryError("malformed fragment cache entry header")
        return cls(body, soft_expiry, template, digest, versions)
