"""Surrogate keys: the names a CDN purges cached pages by.

A page cached at the edge (Varnish, Fastly, Cloudflare) must be purged when
a fragment it holds is invalidated.  The page lists, in a response header,
one short key per version counter it depends on (see
:func:`jinja_fragcache.recording.page_contents`); an invalidation bumps
counters, and :func:`purge_keys` names the keys to purge for them.  So the
rule is written once: a counter and its key are the same thing, seen by
the cache and by the CDN.

Keys are ``[a-z0-9-]`` only, at most 40 characters, and deterministic
across processes (a hash, never ``hash()``)::

    t-products-5b0e37c2d1a4f9e8     tag "products"          (tag counter)
    n-card-0c8f4e1a9b2d3c7f         every "card"            (name counter)
    v-card-7d1e0f2a3b4c5d6e         one variant of "card"   (variant counter)
    nf-card-e4d3c2b1a0f9e8d7        some variants of "card", folded

The hash covers the whole counter key, prefix included, so two sites
behind one CDN never purge each other's pages.

A header has a size limit.  When the keys do not fit, the variants of the
names with the most variants are *folded* into one key per name (``nf-``).
A variant's purge always purges its folded key too, so a page that was
folded is still purged: a little more than needed, never less.  When even
that does not fit, :func:`header_value` says so (``None``) and the page
must not be cached at the edge; nothing is ever cut off silently.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .keys import KEY_FORMAT


@dataclass(frozen=True)
class HeaderStyle:
    """How one CDN reads surrogate keys from a response."""

    #: The response header.
    header: str
    #: What goes between two keys.
    separator: str
    #: The longest value the header may carry, in bytes.
    max_header_bytes: int
    #: The longest single key, in bytes; ``None``: no limit of its own.
    max_key_bytes: int | None = None


#: The styles ``FRAGCACHE["SURROGATE_KEYS"]["HEADER"]`` names.
STYLES: dict[str, HeaderStyle] = {
    # Varnish's vmod xkey.  Varnish refuses a backend header line longer
    # than http_resp_hdr_len (8 KB by default), name included.
    "xkey": HeaderStyle("xkey", " ", 8000),
    # Fastly: 1,024 bytes a key, 16,384 bytes the header.
    "Surrogate-Key": HeaderStyle("Surrogate-Key", " ", 16384, 1024),
    # Cloudflare: 16 KB for the whole value, commas included.
    "Cache-Tag": HeaderStyle("Cache-Tag", ",", 16384),
}


def style_for(header: str) -> HeaderStyle:
    """The :class:`HeaderStyle` called *header*.

    :raises ValueError: for a name not in :data:`STYLES`.
    """
    style = STYLES.get(header) if isinstance(header, str) else None
    if style is None:
        raise ValueError(
            f"unknown surrogate key header {header!r}; use one of: {', '.join(STYLES)}"
        )
    return style


_NOT_TOKEN_RE = re.compile(r"[^a-z0-9]+")
_READABLE_LENGTH = 16
_KINDS = {"f": "v", "n": "n", "t": "t"}


def _token(kind: str, readable: str, hashed: str) -> str:
    # The readable part is for humans reading purge logs; the hash decides.
    short = _NOT_TOKEN_RE.sub("-", readable.lower()).strip("-")
    short = short[:_READABLE_LENGTH].rstrip("-")
    digest = hashlib.blake2b(hashed.encode("utf-8"), digest_size=8).hexdigest()
    return f"{kind}-{short}-{digest}" if short else f"{kind}-{digest}"


def _parts(counter: str) -> tuple[str, str, str] | None:
    """``(prefix, kind, readable)`` of a counter key of this library's
    layout, else ``None``; the kind is ``v`` for a variant's counter."""
    parts = counter.split(":")
    if len(parts) < 5 or parts[1] != KEY_FORMAT:
        return None
    prefix, _, kind, readable = parts[:4]
    readable = readable.strip("{}")  # the hash tag of kinds f and n
    if kind == "f" and parts[5:] == ["v"]:
        return prefix, "v", readable
    if kind in ("n", "t") and len(parts) == 5:
        return prefix, kind, readable
    return None


def surrogate_key(counter: str) -> str:
    """The surrogate key of one version counter key.

    A key of another layout still gets a key of its own (kind ``x``), so
    nothing a page depends on goes unlisted.
    """
    parts = _parts(counter)
    if parts is None:
        return _token("x", "", counter)
    return _token(parts[1], parts[2], counter)


def folded_key(counter: str) -> str | None:
    """The key a variant's counter folds into (one per fragment name and
    prefix), or ``None`` for a counter that is not a variant's."""
    parts = _parts(counter)
    if parts is None or parts[1] != "v":
        return None
    prefix, _, readable = parts
    # The readable part, not the name: it is all a variant's counter
    # holds.  Two names alike in their first 48 characters share a folded
    # key, which only purges a little more.
    return _token("nf", readable, f"{prefix}:{readable}")


def purge_keys(counters: Iterable[str]) -> list[str]:
    """The surrogate keys to purge once *counters* were bumped: a variant's
    key and its folded key, a name's key, a tag's key.  Ordered, no repeats."""
    keys: dict[str, None] = {}
    for counter in counters:
        keys[surrogate_key(counter)] = None
        folded = folded_key(counter)
        if folded is not None:
            keys[folded] = None
    return list(keys)


def header_value(style: HeaderStyle, counters: Iterable[str]) -> str | None:
    """The value of *style*'s header for a page that holds *counters*:
    ``""`` when it holds none, ``None`` when the keys do not fit even
    folded (the page must then stay out of the edge's cache).

    Every counter is covered: by its own key, or by its folded key when
    the header would be too long otherwise.  Names with the most variants
    are folded first, so the others keep their precise keys.
    """
    own: dict[str, str | None] = {}
    for counter in counters:
        own.setdefault(surrogate_key(counter), folded_key(counter))
    limit = style.max_key_bytes
    if limit is not None and any(len(key) > limit for key in own):
        return None
    keys = _folded_to_fit(own, style)
    return None if keys is None else style.separator.join(keys)


def _folded_to_fit(own: dict[str, str | None], style: HeaderStyle) -> list[str] | None:
    """The keys of *own* (key -> its folded key), with as few names folded
    as it takes to fit *style*'s header; ``None`` if nothing fits."""
    step = len(style.separator)
    size = sum(len(key) + step for key in own) - step
    groups: dict[str, list[str]] = {}
    for key, folded in own.items():
        if folded is not None:
            groups.setdefault(folded, []).append(key)
    # Folding a single variant saves nothing: only names with several.
    order = sorted((g for g in groups.items() if len(g[1]) > 1), key=_by_size)
    folding: set[str] = set()
    for folded, members in order:
        if size <= style.max_header_bytes:
            break
        size += len(folded) + step - sum(len(key) + step for key in members)
        folding.add(folded)
    if size > style.max_header_bytes:
        return None
    keys: dict[str, None] = {}
    for key, folded in own.items():
        keys[folded if folded is not None and folded in folding else key] = None
    return list(keys)


def _by_size(group: tuple[str, list[str]]) -> int:
    return -len(group[1])
