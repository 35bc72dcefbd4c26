"""Surrogate keys on responses, so a CDN can purge a page when a fragment
it holds is invalidated.

::

    MIDDLEWARE = [
        "django_bridge.middleware.SurrogateKeyMiddleware",  # first
        "django.contrib.sessions.middleware.SessionMiddleware",
        ...
    ]
    FRAGCACHE = {"SURROGATE_KEYS": {"HEADER": "xkey"}}

Put it first, so that it sees the cookies every other middleware sets.
Each response gets the header with one key per tag, fragment name and
variant of every fragment and cached view it holds, hits and misses,
nested ones included (:func:`jinja_fragcache.recording.page_contents`).

What varies per visitor stays private: a response that used the CSRF
token, filled a hole, accessed the session, was made for a logged-in
user, or sets a cookie gets ``Cache-Control: private`` and no surrogate
keys, whatever else it says.  So does one whose keys do not fit the
header even folded (a warning is logged), and a streaming response other
than a file: its fragments render after the headers are sent, so its
keys cannot be known.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import FileResponse, HttpRequest, HttpResponseBase
from django.utils.cache import patch_cache_control

from jinja_fragcache.recording import PageContents, page_contents
from jinja_fragcache.surrogates import HeaderStyle, header_value

from .conf import settings

logger = logging.getLogger("django_bridge")

_NOT_SHARED = ("private", "no-store", "no-cache")


class SurrogateKeyMiddleware:
    """Adds ``FRAGCACHE["SURROGATE_KEYS"]["HEADER"]`` to each response, or
    ``Cache-Control: private`` where the response must not be shared.
    Sync and async, as Django's own middleware are."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        style = settings.surrogate_style
        if style is None:
            return self.get_response(request)
        with page_contents() as contents:
            response: HttpResponseBase = self.get_response(request)
        private = _varies_per_visitor(request, contents, response)
        if not private:
            user = getattr(request, "user", None)
            private = bool(user is not None and user.is_authenticated)
        return _label(request, response, style, contents, private=private)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        style = settings.surrogate_style
        response: HttpResponseBase
        if style is None:
            response = await self.get_response(request)
            return response
        with page_contents() as contents:
            response = await self.get_response(request)
        private = _varies_per_visitor(request, contents, response)
        if not private and hasattr(request, "auser"):
            # request.user would read the session synchronously.
            private = bool((await request.auser()).is_authenticated)
        return _label(request, response, style, contents, private=private)


def _varies_per_visitor(
    request: HttpRequest, contents: PageContents, response: HttpResponseBase
) -> bool:
    """Whether the response differs per visitor, the user aside (whose
    check may read the session, so it comes after the session's)."""
    session = getattr(request, "session", None)
    return bool(
        # get_token() sets it (and leaves it False once the cookie is sent):
        # the page holds this visitor's CSRF token.
        "CSRF_COOKIE_NEEDS_UPDATE" in request.META
        or contents.holes
        or (session is not None and session.accessed)
        or response.cookies
        or response.has_header("Set-Cookie")
    )


def _label(
    request: HttpRequest,
    response: HttpResponseBase,
    style: HeaderStyle,
    contents: PageContents,
    *,
    private: bool,
) -> HttpResponseBase:
    """Give *response* *style*'s header, or ``Cache-Control: private``."""
    if private:
        patch_cache_control(response, private=True)
        return response
    if _already_unshared(response):
        return response
    if response.streaming:
        if not isinstance(response, FileResponse):
            # The body renders after the headers go: its keys are unknown.
            patch_cache_control(response, private=True)
        return response
    value = header_value(style, contents.counters)
    if value is None:
        logger.warning(
            "the %d surrogate keys of %s do not fit in a %s header even folded; "
            "sent with Cache-Control: private",
            len(contents.counters),
            request.path,
            style.header,
        )
        patch_cache_control(response, private=True)
    elif value:
        response[style.header] = value
    return response


def _already_unshared(response: HttpResponseBase) -> bool:
    control = response.get("Cache-Control", "").lower()
    return any(word in control for word in _NOT_SHARED)
