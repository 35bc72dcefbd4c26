"""Conditional requests (RFC 9110 §13): ETag, Last-Modified, 304 and 412.

Usage::

    @condition_support(etag_func=product_etag, last_modified_func=product_changed)
    def product(request, pk): ...

    @etag_support()                      # the ETag of the response body
    def report(request): ...

``etag_support`` and ``last_modified_support`` stacked behave exactly like
``condition_support`` with both functions: stacking merges them into one
evaluation, so each condition is judged only where its validator exists.

Validators describe what a GET returns, so they go on GET and HEAD responses
only, and only those are judged after the view.  An unsafe method is judged
before the view, with what the functions return, or not at all: once the view
has changed the data, a 412 would come too late.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseNotModified,
)
from django.utils.decorators import method_decorator
from django.utils.http import http_date, parse_http_date_safe, quote_etag

View = TypeVar("View", bound=Callable[..., Any])
Validator = Callable[..., Any]

#: The headers a 304 repeats from the 200 it stands for (RFC 9110 §15.4.5).
NOT_MODIFIED_HEADERS = (
    "Cache-Control",
    "Content-Location",
    "Date",
    "ETag",
    "Expires",
    "Vary",
)
#: What a 304 repeats besides: §15.4.5 allows metadata that guides cache
#: updates, and Django's 304 keeps Last-Modified too.
_ALSO_ON_304 = ("Last-Modified",)
SAFE_METHODS = ("GET", "HEAD")
_CC_DELIM = re.compile(r"\s*,\s*")  # Django's cc_delim_re, not in its stubs
_ETAG = re.compile(r'\s*(W/)?("[^"]*")\s*(?:,|$)')
_MARK = "__fragcache_condition__"


def parse_etags(value: str) -> list[str] | None:
    """The entity tags of an If-Match/If-None-Match value, ``["*"]`` for a
    star, ``None`` when the value is malformed (the header is then ignored)."""
    value = value.strip()
    if value == "*":
        return ["*"]
    tags, position = [], 0
    while position < len(value):
        match = _ETAG.match(value, position)
        if not match:
            return None
        tags.append((match.group(1) or "") + match.group(2))
        position = match.end()
    return tags or None


def _opaque(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


def weak_match(tags: list[str], etag: str) -> bool:
    return any(_opaque(tag) == _opaque(etag) for tag in tags)


def strong_match(tags: list[str], etag: str) -> bool:
    return not etag.startswith("W/") and any(tag == etag for tag in tags)


def _date(request: HttpRequest, header: str) -> int | None:
    value = request.headers.get(header)
    return parse_http_date_safe(value) if value else None


def evaluate(
    request: HttpRequest,
    etag: str | None,
    last_modified: int | None,
) -> int | None:
    """The status the preconditions call for: 304, 412, or ``None`` to go on.

    The order is RFC 9110 §13.2.2's; a malformed header is ignored.  A list of
    tags never matches a resource without an ETag (§13.1.1, §13.1.2), and
    If-Unmodified-Since/If-Modified-Since are ignored without a Last-Modified
    (§13.1.4, §13.1.3).  ``*`` asks whether the resource has a current
    representation: it has one when it has a validator, either of the two.
    """
    exists = etag is not None or last_modified is not None
    safe = request.method in SAFE_METHODS
    if_match = parse_etags(request.headers.get("If-Match", ""))
    if if_match is not None:
        if if_match == ["*"]:
            passes = exists
        else:
            passes = etag is not None and strong_match(if_match, etag)
        if not passes:
            return 412
    elif last_modified is not None:
        since = _date(request, "If-Unmodified-Since")
        if since is not None and last_modified > since:
            return 412
    if_none_match = parse_etags(request.headers.get("If-None-Match", ""))
    if if_none_match is not None:
        if if_none_match == ["*"]:
            matches = exists
        else:
            matches = etag is not None and weak_match(if_none_match, etag)
        if matches:
            return 304 if safe else 412
    elif safe and last_modified is not None:
        since = _date(request, "If-Modified-Since")
        if since is not None and last_modified <= since:
            return 304
    return None


def _timestamp(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            # A naive datetime is UTC, as in Django's ``condition``: read in the
            # process's zone it would move by the TIME_ZONE offset.
            value = value.replace(tzinfo=timezone.utc)
        return int(value.timestamp())
    return int(value)


def _answer(
    status: int,
    response: HttpResponseBase | None,
    etag: str | None,
    last_modified: int | None,
) -> HttpResponseBase:
    if status == 412:
        return HttpResponse(status=412)
    not_modified = HttpResponseNotModified()
    if response is not None:
        for header in (*NOT_MODIFIED_HEADERS, *_ALSO_ON_304):
            if header in response:
                not_modified[header] = response[header]
        for cookie in response.cookies.values():  # keep what middleware set
            not_modified.cookies[cookie.key] = cookie
    if etag:
        not_modified["ETag"] = etag
    if last_modified is not None and "Last-Modified" not in not_modified:
        not_modified["Last-Modified"] = http_date(last_modified)
    return not_modified


def _body_etag(response: HttpResponseBase) -> str | None:
    """The digest of the body, where ConditionalGetMiddleware would make one:
    not for a streaming or an empty body, nor under ``no-store``."""
    directives = _CC_DELIM.split(response.get("Cache-Control", ""))
    if response.streaming or any(d.lower() == "no-store" for d in directives):
        return None
    content = response.content  # type: ignore[attr-defined]
    if not content:
        return None
    return f'"{hashlib.blake2b(content, digest_size=16).hexdigest()}"'


def _finish(
    request: HttpRequest,
    response: HttpResponseBase,
    etag: str | None,
    last_modified: int | None,
    *,
    etag_from_body: bool,
    judge: bool,
) -> HttpResponseBase:
    """Put the validators on a GET or HEAD 2xx response; with *judge*, answer
    304 or 412 from the validators it ends up with."""
    if request.method not in SAFE_METHODS:
        # What the functions computed describes the state before the view;
        # after a PUT or POST it would be the representation just replaced.
        return response
    if not 200 <= response.status_code < 300:
        return response  # a 304 stands only for a 2xx
    if "ETag" not in response:
        etag = etag or (_body_etag(response) if etag_from_body else None)
        if etag:
            response["ETag"] = etag
    if last_modified is not None and "Last-Modified" not in response:
        response["Last-Modified"] = http_date(last_modified)
    if not judge:
        return response
    # The view's own ETag and Last-Modified count, as in the middleware.
    etag = response.get("ETag")
    last_modified = parse_http_date_safe(response.get("Last-Modified", ""))
    status = evaluate(request, etag, last_modified)
    return _answer(status, response, etag, last_modified) if status else response


def condition_support(
    etag_func: Validator | None = None, last_modified_func: Validator | None = None
) -> Callable[[View], View]:
    """Answer conditional requests for a view.

    *etag_func* and *last_modified_func* take the view's arguments and run
    before it, so a 304 or a 412 skips the view; either may return ``None``
    (no validator; with neither, the resource counts as absent for ``*``).
    A naive datetime is read as UTC.  ETag and Last-Modified go on GET and
    HEAD 2xx responses only.

    Without *etag_func* the ETag of a GET or HEAD is a digest of the 2xx
    response body (none for an empty or streaming body or under
    ``Cache-Control: no-store``), and If-Match/If-None-Match are judged
    after the view; on other methods there is then no ETag before the view,
    so an If-Match list fails with 412 before anything changes.  Without
    *last_modified_func*, a Last-Modified the view sets itself is honoured on
    GET and HEAD.  Works on function views, async views, ``method_decorator``
    and as a class decorator on a ``View``.
    """

    def decorator(view: View) -> View:
        if inspect.isclass(view):
            return method_decorator(decorator, name="dispatch")(view)
        # Stacked on another of these decorators: merge into one evaluation.
        inner, etags, dates = getattr(view, _MARK, (view, None, None))
        etags, dates = etag_func or etags, last_modified_func or dates
        wrapped = _wrap(inner, etags, dates)
        setattr(wrapped, _MARK, (inner, etags, dates))
        return wrapped  # type: ignore[return-value]

    return decorator


def _wrap(
    view: Callable[..., Any],
    etag_func: Validator | None,
    last_modified_func: Validator | None,
) -> Callable[..., Any]:
    def before(
        request: HttpRequest, args: Any, kwargs: Any
    ) -> tuple[str | None, int | None, HttpResponseBase | None]:
        etag = etag_func(request, *args, **kwargs) if etag_func else None
        etag = quote_etag(etag) if etag else None
        modified = (
            _timestamp(last_modified_func(request, *args, **kwargs))
            if last_modified_func
            else None
        )
        # An ETag made from the body is known only after the view: on GET and
        # HEAD, if the request asks about ETags, judge it all then.  Other
        # methods are judged here or never, before the view changes anything.
        if (
            etag_func is None
            and request.method in SAFE_METHODS
            and ("If-Match" in request.headers or "If-None-Match" in request.headers)
        ):
            return etag, modified, None
        status = evaluate(request, etag, modified)
        return etag, modified, _answer(status, None, etag, modified) if status else None

    # A validator the functions do not give may come from the view (the
    # body's digest, a Last-Modified it sets): judge GET and HEAD again then.
    judge = etag_func is None or last_modified_func is None
    etag_from_body = etag_func is None

    if inspect.iscoroutinefunction(view):

        @functools.wraps(view)
        async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            # The validators may query the database: off the event loop.
            etag, modified, early = await sync_to_async(before)(request, args, kwargs)
            if early is not None:
                return early
            response = await view(request, *args, **kwargs)
            return _finish(
                request,
                response,
                etag,
                modified,
                etag_from_body=etag_from_body,
                judge=judge,
            )

        return async_wrapper

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        etag, modified, early = before(request, args, kwargs)
        if early is not None:
            return early
        response = view(request, *args, **kwargs)
        return _finish(
            request,
            response,
            etag,
            modified,
            etag_from_body=etag_from_body,
            judge=judge,
        )

    return wrapper


def etag_support(etag_func: Validator | None = None) -> Callable[[View], View]:
    """:func:`condition_support` with an ETag only (from *etag_func*, or from
    the response body)."""
    return condition_support(etag_func=etag_func)


def last_modified_support(last_modified_func: Validator) -> Callable[[View], View]:
    """:func:`condition_support` with a Last-Modified date only."""
    return condition_support(last_modified_func=last_modified_func)
