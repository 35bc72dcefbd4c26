"""Conditional requests (RFC 9110 §13): ETag, Last-Modified, 304 and 412.

Usage::

    @condition_support(etag_func=product_etag, last_modified_func=product_changed)
    def product(request, pk): ...

    @etag_support()                      # the ETag of the response body
    def report(request): ...

``etag_support`` and ``last_modified_support`` stacked behave exactly like
``condition_support`` with both functions: stacking merges them into one
evaluation, so each condition is judged only where its validator exists.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import re
from collections.abc import Callable
from datetime import datetime
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
SAFE_METHODS = ("GET", "HEAD")
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
    request: HttpRequest, etag: str | None, last_modified: int | None
) -> int | None:
    """The status the preconditions call for: 304, 412, or ``None`` to go on.

    The order is RFC 9110 §13.2.2's.  Each condition is judged only where its
    validator exists; a malformed header is ignored.
    """
    safe = request.method in SAFE_METHODS
    if_match = parse_etags(request.headers.get("If-Match", ""))
    if if_match is not None and (etag is not None or if_match == ["*"]):
        if if_match != ["*"] and not (etag and strong_match(if_match, etag)):
            return 412
    elif last_modified is not None:
        since = _date(request, "If-Unmodified-Since")
        if since is not None and last_modified > since:
            return 412
    if_none_match = parse_etags(request.headers.get("If-None-Match", ""))
    if if_none_match is not None and (etag is not None or if_none_match == ["*"]):
        if if_none_match == ["*"] or (etag and weak_match(if_none_match, etag)):
            return 304 if safe else 412
    elif safe and last_modified is not None and if_none_match is None:
        since = _date(request, "If-Modified-Since")
        if since is not None and last_modified <= since:
            return 304
    return None


def _timestamp(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
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
        for header in NOT_MODIFIED_HEADERS:
            if header in response:
                not_modified[header] = response[header]
        for cookie in response.cookies.values():  # keep what middleware set
            not_modified.cookies[cookie.key] = cookie
    if etag:
        not_modified["ETag"] = etag
    if last_modified is not None and "Last-Modified" not in not_modified:
        not_modified["Last-Modified"] = http_date(last_modified)
    return not_modified


def _finish(
    request: HttpRequest,
    response: HttpResponseBase,
    etag: str | None,
    last_modified: int | None,
    judge: bool,
) -> HttpResponseBase:
    """Put the validators on a 2xx response; with *judge*, answer 304 or 412
    from it if the preconditions call for it."""
    if not 200 <= response.status_code < 300:
        return response  # a 304 stands only for a 2xx
    if etag is None and "ETag" not in response and not response.streaming:
        content = response.content  # type: ignore[attr-defined]
        etag = f'"{hashlib.blake2b(content, digest_size=16).hexdigest()}"'
    if etag and "ETag" not in response:
        response["ETag"] = etag
    if last_modified is not None and "Last-Modified" not in response:
        response["Last-Modified"] = http_date(last_modified)
    if not judge:
        return response
    etag = response.get("ETag")
    status = evaluate(request, etag, last_modified)
    return _answer(status, response, etag, last_modified) if status else response


def condition_support(
    etag_func: Validator | None = None, last_modified_func: Validator | None = None
) -> Callable[[View], View]:
    """Answer conditional requests for a view.

    *etag_func* and *last_modified_func* take the view's arguments and run
    before it, so a 304 or a 412 skips the view; either may return ``None``
    (no validator).  Without *etag_func* the ETag is a digest of the 2xx
    response body, and If-Match/If-None-Match are judged after the view.
    Works on function views, async views, ``method_decorator`` and as a
    class decorator on a ``View``.
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
    ) -> tuple[str | None, int | None, bool, HttpResponseBase | None]:
        etag = etag_func(request, *args, **kwargs) if etag_func else None
        etag = quote_etag(etag) if etag else None
        modified = (
            _timestamp(last_modified_func(request, *args, **kwargs))
            if last_modified_func
            else None
        )
        # An ETag made from the body is known only after the view: if the
        # request asks about ETags, judge it all then.
        later = etag_func is None and (
            "If-Match" in request.headers or "If-None-Match" in request.headers
        )
        status = None if later else evaluate(request, etag, modified)
        early = _answer(status, None, etag, modified) if status else None
        return etag, modified, later, early

    if inspect.iscoroutinefunction(view):

        @functools.wraps(view)
        async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            # The validators may query the database: off the event loop.
            etag, modified, later, early = await sync_to_async(before)(
                request, args, kwargs
            )
            if early is not None:
                return early
            response = await view(request, *args, **kwargs)
            return _finish(request, response, etag, modified, later)

        return async_wrapper

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        etag, modified, later, early = before(request, args, kwargs)
        if early is not None:
            return early
        response = view(request, *args, **kwargs)
        return _finish(request, response, etag, modified, later)

    return wrapper


def etag_support(etag_func: Validator | None = None) -> Callable[[View], View]:
    """:func:`condition_support` with an ETag only (from *etag_func*, or from
    the response body)."""
    return condition_support(etag_func=etag_func)


def last_modified_support(last_modified_func: Validator) -> Callable[[View], View]:
    """:func:`condition_support` with a Last-Modified date only."""
    return condition_support(last_modified_func=last_modified_func)
