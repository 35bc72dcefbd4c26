"""CSRF tokens in cached output, by construction rather than by heuristics.

A cached fragment or view never holds a token.  Before it is stored, every
occurrence of the current request's token (masked, as ``{% csrf_token %}``
and ``csrf_input`` write it, or the unmasked secret; in any attribute or
text: a form field, a ``<meta name="csrf-token">``, a script) becomes a hole
(:mod:`jinja_fragcache.holes`), and each request that reads the entry gets
its own token in its place, from ``get_token()``, which also sets the CSRF
cookie of a visitor who has none.  A form is then safe in a fragment shared
by everyone, and a per-user page with a form caches like any other.

A guard stays for what is left over: a token-like value in a CSRF field or
meta tag that is not this request's (hard-coded, or another request's) is
never stored.  Under DEBUG that is an error.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.middleware.csrf import get_token

from jinja_fragcache import FragmentRequest
from jinja_fragcache.holes import MARK, Unfilled, hole

logger = logging.getLogger("django_bridge")

#: The hole a request's CSRF token goes in.
CSRF_HOLE = "csrf_token"
_TOKEN_CANDIDATE = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z0-9]{32}(?:[A-Za-z0-9]{32})?(?![A-Za-z0-9])"
)
# A value next to a CSRF name: a form field, a meta tag, a JS setting.
_LEFTOVER = re.compile(
    r"csrf[\w-]*[\"']?\s*[^<>]{0,40}?[=:]\s*[\"']?([A-Za-z0-9]{32,})", re.I
)


class CsrfTokenInFragment(ImproperlyConfigured):
    """Raised in DEBUG instead of storing output that holds a CSRF token
    other than the request's own."""


def _request(fragment: FragmentRequest) -> Any:
    getter = getattr(fragment.context, "get", None)
    return getter("request") if getter else None


class CsrfHoles:
    """The bridge's :class:`~jinja_fragcache.holes.HoleFiller`."""

    def punch(self, fragment: FragmentRequest, stored: str) -> str:
        request = _request(fragment)
        secret = getattr(request, "META", {}).get("CSRF_COOKIE") if request else None
        if not secret:
            return stored
        # Private, but the one place that knows how Django masks its tokens.
        from django.middleware.csrf import (  # type: ignore[attr-defined]
            _does_token_match,
        )

        def replace(match: re.Match[str]) -> str:
            token = match.group()
            return hole(CSRF_HOLE) if _does_token_match(token, secret) else token

        return _TOKEN_CANDIDATE.sub(replace, stored)

    def fill(self, fragment: FragmentRequest, name: str) -> str:
        request = _request(fragment)
        if name != CSRF_HOLE or request is None:
            # The core renders the fragment uncached instead, and logs it.
            raise Unfilled(f"no value for hole {name!r} in this context")
        return get_token(request)


def refuse_leftover_tokens(fragment: FragmentRequest, stored: str) -> bool:
    """The ``store_filter`` of the bridge's cache: false for output that
    still holds a CSRF token once the request's own became holes."""
    leftover = next(
        (m.group(1) for m in _LEFTOVER.finditer(stored) if MARK not in m.group()),
        None,
    )
    if leftover is None:
        return True
    message = (
        f"Fragment {fragment.name!r} ({fragment.template.removeprefix('django:')}) "
        "holds a CSRF token that is not the current request's, so caching it "
        "would serve that token to everyone. Render the token with "
        "{% csrf_token %}, csrf_input or csrf_token, which the cache fills in "
        "for each request, or move it out of the fragment."
    )
    if django_settings.DEBUG:
        raise CsrfTokenInFragment(message)
    logger.warning("%s Not cached.", message)
    return False
