"""What a tag asks the cache for: one :class:`FragmentRequest` per variant."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any, NamedTuple

from .backends.base import made
from .holes import HoleTable
from .identity import DEFAULT_IDENTITY, RefusedVaryValue, VaryIdentity
from .keys import FragmentCacheWarning
from .timeouts import Timeout, check_timeout


class FragmentRequest(NamedTuple):
    """One variant of one fragment, as a tag asks for it.

    :param name: the fragment name.
    :param vary: the vary values, already as strings (see
        :func:`~jinja_fragcache.keys.vary_strings`).
    :param timeout: checked seconds; ``None`` never expires, ``0`` bypasses
        the cache.
    :param tags: invalidation tags.
    :param template: the template that holds the block.
    :param digest: the digest of the block's source (and what it includes).
    :param context: the template context the tag rendered in, for a
        ``store_filter``; not part of the key.
    :param holes: the ``{% nocache %}`` blocks inside, which a hit renders
        again (see :mod:`jinja_fragcache.holes`); not part of the key.
    :param line: the tag's line in *template*, for messages.
    """

    name: str
    vary: tuple[str, ...] = ()
    timeout: Timeout = None
    tags: tuple[str, ...] = ()
    template: str = ""
    digest: str = ""
    context: Any = None
    holes: HoleTable | None = None
    line: int = 0

    @property
    def where(self) -> str:
        """Where the tag is, as messages name it."""
        return where(self.template, self.line)

    def rendering(
        self, context: Any, holes: HoleTable | None, line: int
    ) -> FragmentRequest:
        """This request, as a render at *line* with *context* and *holes*
        makes it (a remembered hit's, kept without them).  Built whole, by
        ``made``: ``_replace`` costs three times as much, on every hit with
        holes."""
        fields = (
            self.name,
            self.vary,
            self.timeout,
            self.tags,
            self.template,
            self.digest,
            context,
            holes,
            line,
        )
        return made(FragmentRequest, fields)


def where(template: str | None, line: int | None) -> str:
    """A place in a template, as every message names it (a DTL template's
    name is kept as ``django:<name>`` in entries, shown without it)."""
    shown = (template or "").removeprefix("django:") or "<string>"
    return f"template {shown!r}, line {line}"


def check_tags(tags: object) -> tuple[str, ...]:
    """``tags=`` as a tuple: ``None``, a string, or strings; else ``ValueError``."""
    if tags is None:
        return ()
    if isinstance(tags, str):
        return (tags,)
    if isinstance(tags, Iterable):
        found = tuple(tags)
        if all(isinstance(tag, str) for tag in found):
            return found
    raise ValueError(f"tags= must be a string or a list of strings, got {tags!r}")


def build_requests(
    name: str,
    varies: Iterable[Iterable[object]],
    *,
    timeout: object,
    tags: object = None,
    template: str = "",
    digest: str = "",
    context: Any = None,
    holes: HoleTable | None = None,
    line: int = 0,
    identity: VaryIdentity | None = None,
    debug: bool = False,
    strings: tuple[str, ...] | None = None,
) -> list[FragmentRequest]:
    """One request per tuple of vary values, as every tag builds them.

    The timeout and the tags are checked once.  A variant with a vary value
    that has no safe identity (see :mod:`jinja_fragcache.identity`) renders
    uncached (its timeout becomes ``0``) with a warning naming *template*
    and *line* (or no template); with *debug* a value with no identity at
    all is an error instead.

    :raises ValueError: naming the bad value; the tag adds the template and
        the line.

    *strings*, when the caller has them already, are those of the one tuple
    in *varies* (see :func:`~jinja_fragcache.memo.strings_of`).
    """
    seconds = check_timeout(timeout)
    tag_names = check_tags(tags)
    identity = identity or DEFAULT_IDENTITY
    requests = []
    for vary in varies:
        wanted = seconds
        try:
            converted = identity.strings(vary) if strings is None else strings
        except RefusedVaryValue as refused:
            if debug and refused.severe:
                raise
            place = where(template, line) if template or line else "no template"
            warnings.warn(
                f"fragment {name!r} ({place}) is not cached: {refused}",
                FragmentCacheWarning,
                stacklevel=2,
            )
            converted, wanted = (), 0.0
        fields = (
            name,
            converted,
            wanted,
            tag_names,
            template,
            digest,
            context,
            holes,
            line,
        )
        requests.append(made(FragmentRequest, fields))
    return requests
