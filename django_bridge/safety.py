"""Keeping a request's CSRF token out of shared fragments.

Caching a form with ``{% csrf_token %}`` (or Jinja's ``csrf_input``) in a
fragment that does not vary per user or session hands one visitor's token to
every other: their posts then fail, or worse, the token leaks.  It is the
leak users report most against Django's ``{% cache %}``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from jinja_fragcache import FragmentRequest

logger = logging.getLogger("django_bridge")

_FORM_FIELD = "csrfmiddlewaretoken"
_TOKEN_CANDIDATE = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z0-9]{32}(?:[A-Za-z0-9]{32})?(?![A-Za-z0-9])"
)


class CsrfTokenInFragment(ImproperlyConfigured):
    """Raised in DEBUG instead of storing a fragment holding a CSRF token."""


def _request(fragment: FragmentRequest) -> Any:
    context = fragment.context
    getter = getattr(context, "get", None)
    return getter("request") if getter else None


def _holds_token(body: str, request: Any) -> bool:
    if _FORM_FIELD in body:
        return True
    secret = getattr(request, "META", {}).get("CSRF_COOKIE") if request else None
    if not secret:
        return False
    # Private, but the one place that knows how Django masks its tokens.
    from django.middleware.csrf import _does_token_match  # type: ignore[attr-defined]

    return any(
        _does_token_match(candidate, secret)
        for candidate in _TOKEN_CANDIDATE.findall(body)
    )


def _varies_per_visitor(fragment: FragmentRequest, request: Any) -> bool:
    identities = set()
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        identities.add(str(user.pk))
    session = getattr(request, "session", None)
    if session is not None and session.session_key:
        identities.add(str(session.session_key))
    return bool(identities.intersection(fragment.vary))


def refuse_csrf_tokens(fragment: FragmentRequest, body: str) -> bool:
    """The ``store_filter`` of the bridge's cache: false for a shared
    fragment that holds the current request's CSRF token."""
    request = _request(fragment)
    if not _holds_token(body, request) or _varies_per_visitor(fragment, request):
        return True
    message = (
        f"Fragment {fragment.name!r} ({fragment.template.removeprefix('django:')}) "
        "contains the request's CSRF token but does not vary per user or "
        "session, so caching it would serve this token to everyone. Add the "
        "session (request.session.session_key) or the user (request.user.pk) "
        "to its VARY values, or move the form out of the fragment."
    )
    if django_settings.DEBUG:
        raise CsrfTokenInFragment(message)
    logger.warning("%s Not cached.", message)
    return False
