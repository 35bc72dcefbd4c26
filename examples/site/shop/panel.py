"""The panel at the foot of every page: what this request's fragments and
cached views did (HIT, MISS, STALE or UNCACHED, fetch and render ms, key).

A middleware, outermost, so that it sees every lookup, a cached view's
included, and adds the panel after the view has answered: a stored
response or fragment never holds it, and a cached page shows the panel of
the request that reads it.  The table is the debug-toolbar panel's
(``django_bridge/panel.html``); the lookups come from the core's
:func:`jinja_fragcache.recording.recording`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from time import perf_counter

from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

from jinja_fragcache.recording import recording

#: Where the panel goes: before the page's last ``</body>``.
BODY_END = b"</body>"


class FragmentPanelMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = perf_counter()
        with recording() as lookups:
            response = self.get_response(request)
        if not _is_page(response):
            return response
        outcomes = Counter(lookup.outcome.upper() for lookup in lookups)
        panel = render_to_string(
            "shop/panel.html",
            {
                "lookups": [
                    {**lookup._asdict(), "outcome": lookup.outcome.upper()}
                    for lookup in lookups
                ],
                "outcomes": sorted(outcomes.items()),
                "visitor": request.user.get_username() or "anonymous",
                "total_ms": (perf_counter() - started) * 1000,
                "x_cache": response.get("X-Cache", ""),
            },
        )
        head, end, tail = response.content.rpartition(BODY_END)
        response.content = head + panel.encode() + end + tail
        if response.has_header("Content-Length"):
            response["Content-Length"] = str(len(response.content))
        return response


def _is_page(response: HttpResponse) -> bool:
    """An HTML page with a body to add to (not a 304, a redirect, JSON or
    a stream)."""
    return (
        response.status_code == 200
        and not response.streaming
        and response.get("Content-Type", "").startswith("text/html")
        and BODY_END in response.content
    )
