"""Holes on the way in and out of a cache: a rendered body sealed into its
stored form, a stored body opened for one request.

The mechanism (the stored encoding, the live markers) is
:mod:`jinja_fragcache.holes`; this module is what a
:class:`~jinja_fragcache.cache.FragmentCache` does with it around a render
and a hit.  A hole that cannot be filled renders the fragment uncached,
logged with its template and line: no placeholder reaches a client.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import holes
from .flow import Rendered
from .lookup import counters_of
from .recording import UNCACHED, report_holes, report_uncached
from .render_state import current

if TYPE_CHECKING:
    from .cache import FragmentCache
    from .requests import FragmentRequest

logger = logging.getLogger("jinja_fragcache")


def open_stored(
    cache: FragmentCache,
    request: FragmentRequest,
    stored: str,
    render: Callable[[int], str],
    index: int,
) -> str:
    """The output of a stored body for *request*: its holes filled, or,
    when one cannot be, the fragment rendered uncached."""
    try:
        cut, table = _cut(request, stored)
        state = current.get()
        # Inside another fragment's render, fragments inside start afresh.
        token = None if state is None else holes.apart(state)
        try:
            outputs = {b: table.render(b) for b in cut.blocks}
        finally:
            if token is not None:
                current.reset(token)
        outer = None if state is None else state.live
        return _filled(cache, request, cut, outputs, outer)
    except holes.Unfilled as exc:
        unfilled(cache, request, str(exc))
        return cache._collect(render, index, holes.OFF).body


async def aopen_stored(
    cache: FragmentCache,
    request: FragmentRequest,
    stored: str,
    render: Callable[[int], Awaitable[str]],
    index: int,
) -> str:
    """Async :func:`open_stored`."""
    try:
        cut, table = _cut(request, stored)
        state = current.get()
        token = None if state is None else holes.apart(state)
        try:
            outputs = {b: await table.render(b) for b in cut.blocks}
        finally:
            if token is not None:
                current.reset(token)
        outer = None if state is None else state.live
        return _filled(cache, request, cut, outputs, outer)
    except holes.Unfilled as exc:
        unfilled(cache, request, str(exc))
        return (await cache._acollect(render, index, holes.OFF)).body


def _filled(
    cache: FragmentCache,
    request: FragmentRequest,
    cut: holes.Cut,
    outputs: dict[int, Any],
    outer: holes.LiveHoles | None,
) -> str:
    """The body with the ``{% nocache %}`` *outputs* and the system holes
    in; inside another fragment's render (*outer*), the blocks' markers."""
    marking = outer is not None and outer is not holes.OFF
    parts = list(cut.parts)
    for i, hole in cut.holes:
        if type(hole) is int:  # a block's
            output = str(outputs[hole])
            if marking:
                owner = request.holes.owner if request.holes else ""
                output = outer.mark(owner, hole, output)  # type: ignore[union-attr]
            parts[i] = output
        elif cache.holes is None:
            raise holes.Unfilled(f"nothing fills hole {hole!r}")
        else:
            parts[i] = cache.holes.fill(request, hole)  # type: ignore[arg-type]
    if not marking:  # else the outermost fragment counts them
        report_holes(1)
    return "".join(parts)


def unfilled(cache: FragmentCache, request: FragmentRequest, why: str) -> None:
    """A hole of *request* could not be filled: it renders uncached."""
    cache.statistics.record_error(request.name)
    logger.error(
        "fragment %r (%s) rendered uncached: %s", request.name, request.where, why
    )
    report_uncached(request.name, counters_of(cache.prefix, [request], cache.shards))


def sealed(
    cache: FragmentCache, request: FragmentRequest, rendered: Rendered
) -> str | None:
    """The stored form of a rendered body: escaped, its ``{% nocache %}``
    blocks and per-request values made holes; ``None`` when a block inside
    belongs to another template, which this fragment could not render on a
    hit."""
    if rendered.live is None:
        stored: str | None = holes.escape(rendered.body)
    else:
        stored = rendered.live.sealed(rendered.marked or "", request.holes)
    if stored is None or cache.holes is None:
        return stored
    return cache.holes.punch(request, stored)


def scopes(
    live: holes.LiveHoles | None,
) -> tuple[holes.LiveHoles | None, holes.LiveHoles]:
    """The live holes around a render, and those it records in: the ones
    around it, or its own if it is the outermost (or *live*, when given)."""
    state = current.get()
    outer = None if state is None else state.live
    if live is not None:
        return outer, live
    if outer is None or outer is holes.OFF:
        return outer, holes.LiveHoles()
    return outer, outer


def finished(
    scope: holes.LiveHoles,
    outer: holes.LiveHoles | None,
    body: str,
    versions: dict[str, str],
    seconds: float,
) -> Rendered | holes.Unfilled:
    """A render's result: the outermost fills its blocks' markers in.

    :class:`~.holes.Unfilled` when a marker cannot be filled (it was
    altered on its way): the caller renders again with the blocks' content
    in place, uncached.
    """
    if scope is holes.OFF:  # its blocks' content is in: never stored
        versions.setdefault(UNCACHED, "{% nocache %}")
        return Rendered(body, versions, seconds)
    if not scope.met:  # (the collector answers most renders itself)
        return Rendered(body, versions, seconds)
    if scope is outer:  # nested: the outermost fragment fills them in
        return Rendered(body, versions, seconds, scope, body)
    try:
        served = scope.served(body)
    except holes.Unfilled as exc:
        return exc
    report_holes(len(scope.met))
    return Rendered(served, versions, seconds, scope, body)


def _cut(request: FragmentRequest, stored: str) -> tuple[holes.Cut, holes.HoleTable]:
    """*stored* cut at its holes, and the table that renders its
    ``{% nocache %}`` blocks; :class:`~.holes.Unfilled` if a block is not in
    it (another template of the same name wrote the entry)."""
    cut = holes.cut(stored)
    table = request.holes
    for block in cut.blocks:
        if table is None or block not in table.lines:
            raise holes.Unfilled(f"no {{% nocache %}} block {block} here")
    return cut, table  # type: ignore[return-value]
