"""Conditional requests, table-driven from RFC 9110 §13, and the decorators."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.test import Client, RequestFactory, override_settings
from django.utils.decorators import method_decorator
from django.views import View

from django_bridge.conditional import (
    condition_support,
    etag_support,
    evaluate,
    last_modified_support,
    parse_etags,
)

LM = 784111777  # Sun, 06 Nov 1994 08:49:37 GMT
RFC1123 = "Sun, 06 Nov 1994 08:49:37 GMT"
RFC850 = "Sunday, 06-Nov-94 08:49:37 GMT"
ASCTIME = "Sun Nov  6 08:49:37 1994"
EARLIER = "Sat, 05 Nov 1994 08:49:37 GMT"
LATER = "Mon, 07 Nov 1994 08:49:37 GMT"


def request(method: str, **headers: str) -> HttpRequest:
    meta = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}
    return RequestFactory().generic(method, "/", **meta)


CASES = [
    # method, headers, etag, last_modified, expected
    ("GET", {"If-None-Match": '"abc"'}, '"abc"', None, 304),
    ("HEAD", {"If-None-Match": '"abc"'}, '"abc"', None, 304),
    ("GET", {"If-None-Match": 'W/"abc"'}, '"abc"', None, 304),  # weak comparison
    ("GET", {"If-None-Match": '"abc"'}, 'W/"abc"', None, 304),
    ("GET", {"If-None-Match": '"x", W/"abc"'}, '"abc"', None, 304),  # a list
    ("GET", {"If-None-Match": "*"}, '"abc"', None, 304),
    ("GET", {"If-None-Match": '"x"'}, '"abc"', None, None),
    ("POST", {"If-None-Match": '"abc"'}, '"abc"', None, 412),  # unsafe method
    ("PUT", {"If-None-Match": "*"}, '"abc"', None, 412),
    ("PUT", {"If-Match": '"abc"'}, '"abc"', None, None),
    ("PUT", {"If-Match": 'W/"abc"'}, '"abc"', None, 412),  # strong comparison
    ("PUT", {"If-Match": '"abc"'}, 'W/"abc"', None, 412),
    ("PUT", {"If-Match": '"x", "y"'}, '"abc"', None, 412),
    ("PUT", {"If-Match": "*"}, '"abc"', None, None),
    ("GET", {"If-Modified-Since": RFC1123}, None, LM, 304),
    ("GET", {"If-Modified-Since": RFC850}, None, LM, 304),  # all three date formats
    ("GET", {"If-Modified-Since": ASCTIME}, None, LM, 304),
    ("GET", {"If-Modified-Since": LATER}, None, LM, 304),
    ("GET", {"If-Modified-Since": EARLIER}, None, LM, None),
    ("POST", {"If-Modified-Since": LATER}, None, LM, None),  # only GET and HEAD
    ("GET", {"If-None-Match": '"x"', "If-Modified-Since": LATER}, '"abc"', LM, None),
    ("GET", {"If-None-Match": '"abc"', "If-Modified-Since": EARLIER}, '"abc"', LM, 304),
    ("PUT", {"If-Unmodified-Since": EARLIER}, None, LM, 412),
    ("PUT", {"If-Unmodified-Since": RFC1123}, None, LM, None),
    ("PUT", {"If-Match": '"abc"', "If-Unmodified-Since": EARLIER}, '"abc"', LM, None),
    (
        "GET",
        {"If-Match": '"x"', "If-None-Match": '"abc"'},
        '"abc"',
        None,
        412,
    ),  # If-Match first
    # Malformed headers are ignored.
    ("GET", {"If-None-Match": "abc"}, '"abc"', None, None),
    ("GET", {"If-None-Match": "abc", "If-Modified-Since": LATER}, '"abc"', LM, 304),
    ("GET", {"If-Modified-Since": "yesterday"}, None, LM, None),
    ("PUT", {"If-Match": '"abc'}, '"zzz"', None, None),
    ("PUT", {"If-Unmodified-Since": "soon"}, None, LM, None),
    # A list of tags cannot match a resource without an ETag (§13.1.1, §13.1.2).
    ("PUT", {"If-Match": '"x"'}, None, LM, 412),
    ("PUT", {"If-Match": '"x", "y"'}, None, None, 412),
    ("GET", {"If-Match": '"x"'}, None, LM, 412),
    ("PUT", {"If-None-Match": '"x"'}, None, LM, None),
    # "*" asks whether a representation exists: a validator says it does.
    ("PUT", {"If-Match": "*"}, None, LM, None),
    ("PUT", {"If-Match": "*"}, None, None, 412),
    ("PUT", {"If-None-Match": "*"}, None, None, None),  # create if absent
    ("PUT", {"If-None-Match": "*"}, None, LM, 412),
    ("GET", {"If-None-Match": "*"}, None, LM, 304),
    # A date condition is ignored without a Last-Modified (§13.1.3, §13.1.4).
    ("PUT", {"If-Unmodified-Since": EARLIER}, '"abc"', None, None),
    ("GET", {"If-None-Match": '"x"'}, None, LM, None),
    ("GET", {"If-Modified-Since": LATER}, '"abc"', None, None),
]


@pytest.mark.parametrize(("method", "headers", "etag", "modified", "expected"), CASES)
def test_rfc9110_preconditions(
    method: str,
    headers: dict[str, str],
    etag: str | None,
    modified: int | None,
    expected: int | None,
) -> None:
    assert evaluate(request(method, **headers), etag, modified) == expected


@pytest.mark.parametrize(
    ("value", "tags"),
    [
        ('"a"', ['"a"']),
        ('W/"a" , "b"', ['W/"a"', '"b"']),
        ("*", ["*"]),
        ("a", None),
        ('"a" "b"', None),
        ("", None),
    ],
)
def test_parse_etags(value: str, tags: list[str] | None) -> None:
    assert parse_etags(value) == tags


# -- the decorators --------------------------------------------------------------------------

calls: list[str] = []


def page(request: HttpRequest, pk: int = 1) -> HttpResponse:
    calls.append("view")
    response = HttpResponse(f"page {pk} " * 50)
    response["Cache-Control"] = "max-age=60"
    response["Vary"] = "Accept-Language"
    response["Expires"] = "Sun, 06 Nov 2044 08:49:37 GMT"
    response["Content-Location"] = f"/pages/{pk}"
    return response


def missing(request: HttpRequest) -> HttpResponse:
    return HttpResponse("gone", status=404)


def etag_of(request: HttpRequest, pk: int = 1) -> str:
    return f"v{pk}"


def changed(request: HttpRequest, pk: int = 1) -> int:
    return LM


def test_etag_func_answers_304_before_the_view() -> None:
    view = etag_support(etag_of)(page)
    calls.clear()
    response = view(request("GET"), pk=2)
    assert response.status_code == 200 and response["ETag"] == '"v2"'
    not_modified = view(request("GET", **{"If-None-Match": '"v2"'}), pk=2)
    assert not_modified.status_code == 304
    assert not_modified["ETag"] == '"v2"'
    assert not_modified.content == b""
    assert calls == ["view"]  # the 304 skipped the view
    assert view(request("PUT", **{"If-Match": '"v1"'}), pk=2).status_code == 412
    assert calls == ["view"]


def test_etag_from_the_body_and_a_304_keeps_the_headers() -> None:
    view = etag_support()(page)
    first = view(request("GET"))
    etag = first["ETag"]
    second = view(request("GET", **{"If-None-Match": etag}))
    assert second.status_code == 304
    for header in ("ETag", "Cache-Control", "Vary", "Expires", "Content-Location"):
        assert second[header] == first[header]
    assert "Content-Type" not in second
    assert second.content == b""


def test_no_304_for_anything_but_a_2xx() -> None:
    view = etag_support()(missing)
    assert view(request("GET", **{"If-None-Match": "*"})).status_code == 404
    view = last_modified_support(changed)(missing)
    assert (
        view(request("GET", **{"If-Modified-Since": LATER})).status_code == 304
    )  # date known before


@pytest.mark.parametrize(("method", "headers", "etag", "modified", "expected"), CASES)
def test_stacking_behaves_exactly_like_the_combined_decorator(
    method: str,
    headers: dict[str, str],
    etag: str | None,
    modified: int | None,
    expected: int | None,
) -> None:
    etag_func = (
        (lambda r: etag.strip('"').removeprefix('W/"')) if etag else (lambda r: None)
    )
    date_func = (lambda r: modified) if modified is not None else (lambda r: None)
    combined = condition_support(etag_func=etag_func, last_modified_func=date_func)(
        page
    )
    stacked = etag_support(etag_func)(last_modified_support(date_func)(page))
    stacked_other_way = last_modified_support(date_func)(etag_support(etag_func)(page))
    statuses = {
        view(request(method, **headers)).status_code
        for view in (combined, stacked, stacked_other_way)
    }
    assert len(statuses) == 1


def test_async_views() -> None:
    async def async_page(request: HttpRequest, pk: int = 1) -> HttpResponse:
        return HttpResponse(f"async {pk}")

    view = condition_support(etag_func=etag_of, last_modified_func=changed)(async_page)
    assert asyncio.iscoroutinefunction(view)
    assert asyncio.run(view(request("GET"), pk=3)).status_code == 200
    response = asyncio.run(view(request("GET", **{"If-None-Match": '"v3"'}), pk=3))
    assert response.status_code == 304
    body_etag = etag_support()(async_page)
    etag = asyncio.run(body_etag(request("GET")))["ETag"]
    assert (
        asyncio.run(body_etag(request("GET", **{"If-None-Match": etag}))).status_code
        == 304
    )


@etag_support(etag_of)
class ClassPage(View):
    def get(self, request: HttpRequest, pk: int = 1) -> HttpResponse:
        return HttpResponse("class")


class MethodPage(View):
    @method_decorator(last_modified_support(changed))
    def get(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse("method")


def test_class_based_views() -> None:
    view: Any = ClassPage.as_view()
    assert view(request("GET", **{"If-None-Match": '"v1"'})).status_code == 304
    assert view(request("GET")).status_code == 200
    other: Any = MethodPage.as_view()
    assert other(request("GET", **{"If-Modified-Since": RFC1123})).status_code == 304
    assert (
        other(request("GET", **{"If-Modified-Since": EARLIER}))["Last-Modified"]
        == RFC1123
    )


@override_settings(
    MIDDLEWARE=["django.middleware.gzip.GZipMiddleware"],
    ROOT_URLCONF="tests.test_conditional",
)
def test_etags_still_match_under_gzip() -> None:
    client = Client(headers={"Accept-Encoding": "gzip"})
    first = client.get("/gz/")
    assert first["Content-Encoding"] == "gzip"
    assert first["ETag"].startswith('W/"')  # GZipMiddleware weakened it
    second = client.get("/gz/", headers={"If-None-Match": first["ETag"]})
    assert second.status_code == 304


from django.urls import path  # noqa: E402 - the URLconf of the gzip test

urlpatterns = [path("gz/", etag_support()(page))]


def test_a_304_before_the_view_carries_what_outer_decorators_set() -> None:
    from django.views.decorators.cache import cache_control
    from django.views.decorators.vary import vary_on_headers

    view = cache_control(max_age=60)(
        vary_on_headers("Accept-Language")(etag_support(etag_of)(page))
    )
    calls.clear()
    response = view(request("GET", **{"If-None-Match": '"v1"'}))
    assert response.status_code == 304
    assert calls == []
    assert response["Cache-Control"] == "max-age=60"
    assert response["Vary"] == "Accept-Language"
    assert response["ETag"] == '"v1"'


@pytest.mark.django_db(transaction=True)
def test_async_validators_may_use_the_database() -> None:
    from django.contrib.auth.models import User

    def user_count_etag(request: HttpRequest) -> str:
        return f"users-{User.objects.count()}"

    async def async_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    view = condition_support(etag_func=user_count_etag)(async_view)
    response = asyncio.run(view(request("GET", **{"If-None-Match": '"users-0"'})))
    assert response.status_code == 304


# -- unsafe methods are judged before the view, or not at all --------------------------------

UNSAFE = ["PUT", "POST", "PATCH", "DELETE"]


def body_etag_of_page() -> str:
    etag: str = etag_support()(page)(request("GET"))["ETag"]
    return etag


@pytest.mark.parametrize("method", UNSAFE)
@pytest.mark.parametrize(
    ("headers", "expected", "ran"),
    [
        # No ETag is known before the view, so no listed tag can match (§13.1.1):
        # even the ETag a GET returned, since the view may be about to change it.
        ({"If-Match": "BODY"}, 412, False),
        ({"If-Match": '"other"'}, 412, False),
        # ... and none is matched by If-None-Match (§13.1.2): the view runs.
        ({"If-None-Match": "BODY"}, 200, True),
        ({"If-None-Match": "*"}, 200, True),  # no validator: no representation
        ({}, 200, True),
    ],
)
def test_a_body_etag_never_judges_an_unsafe_method_after_the_view(
    method: str, headers: dict[str, str], expected: int, ran: bool
) -> None:
    headers = {k: body_etag_of_page() if v == "BODY" else v for k, v in headers.items()}
    view = etag_support()(page)
    calls.clear()
    response = view(request(method, **headers))
    assert (response.status_code, calls == ["view"]) == (expected, ran)
    assert "ETag" not in response  # the ETag of a GET, not of this answer


def no_store(request: HttpRequest) -> HttpResponse:
    response = HttpResponse("private")
    response["Cache-Control"] = "No-Cache, No-Store, Max-age=0"
    return response


def extension_directive(request: HttpRequest) -> HttpResponse:
    response = HttpResponse("public")
    response["Cache-Control"] = 'my-directive="my-no-store"'
    return response


@pytest.mark.parametrize(
    ("view", "has_etag"),
    [
        (no_store, False),
        (lambda request: HttpResponse(), False),  # empty body
        (lambda request: StreamingHttpResponse(["content"]), False),
        (extension_directive, True),  # "no-store" only as a whole directive
        (page, True),
    ],
)
def test_a_body_etag_only_where_the_middleware_makes_one(
    view: Any, has_etag: bool
) -> None:
    response = etag_support()(view)(request("GET"))
    assert ("ETag" in response) is has_etag
    # With no ETag, If-None-Match has nothing to match: the full response.
    again = etag_support()(view)(request("GET", **{"If-None-Match": '"x"'}))
    assert again.status_code == 200


def test_head_carries_the_etag_of_get() -> None:
    view = etag_support()(page)
    etag = view(request("GET"))["ETag"]
    assert view(request("HEAD"))["ETag"] == etag
    assert view(request("HEAD", **{"If-None-Match": etag})).status_code == 304


def dated(request: HttpRequest) -> HttpResponse:
    response = HttpResponse("dated " * 20)
    response["Last-Modified"] = RFC1123
    response.set_cookie("seen", "1")
    return response


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"If-Modified-Since": RFC1123}, 304),
        ({"If-Modified-Since": LATER}, 304),
        ({"If-Modified-Since": EARLIER}, 200),
        ({"If-Unmodified-Since": EARLIER}, 412),
        ({"If-Unmodified-Since": RFC1123}, 200),
        ({"If-None-Match": '"x"', "If-Modified-Since": LATER}, 200),  # §13.2.2 step 4
    ],
)
@pytest.mark.parametrize("decorator", [etag_support(), etag_support(etag_of)])
def test_a_last_modified_the_view_sets_is_honoured(
    decorator: Any, headers: dict[str, str], expected: int
) -> None:
    view = decorator(dated)
    response = view(request("GET", **headers))
    assert response.status_code == expected
    if expected == 304:
        assert response["Last-Modified"] == RFC1123  # kept on the 304
        assert response["ETag"] == view(request("GET"))["ETag"]
        assert response.cookies["seen"].value == "1"  # and the cookies


# -- validators go on GET and HEAD only --------------------------------------------------------


def updated(request: HttpRequest, pk: int = 1) -> HttpResponse:
    calls.append(request.method or "")
    return HttpResponse(f"{request.method} done")


@pytest.mark.parametrize(
    ("method", "has_validators"),
    [("GET", True), ("HEAD", True), ("PUT", False), ("POST", False), ("PATCH", False)],
)
@pytest.mark.parametrize(
    "decorator",
    [
        condition_support(etag_func=etag_of, last_modified_func=changed),
        etag_support(etag_of),
        last_modified_support(changed),
        etag_support(),
    ],
)
def test_validators_of_the_old_state_stay_off_unsafe_responses(
    decorator: Any, method: str, has_validators: bool
) -> None:
    response = decorator(updated)(request(method))
    assert response.status_code == 200
    assert ("ETag" in response or "Last-Modified" in response) is has_validators


def test_a_precondition_on_an_unsafe_method_skips_the_view() -> None:
    view = last_modified_support(changed)(updated)
    calls.clear()
    # No ETag: no listed tag matches (§13.1.1), whatever the date says.
    assert view(request("PUT", **{"If-Match": '"v1"'})).status_code == 412
    assert view(request("PUT", **{"If-Unmodified-Since": EARLIER})).status_code == 412
    assert calls == []
    # A Last-Modified means a representation exists: "*" passes.
    assert view(request("PUT", **{"If-Match": "*"})).status_code == 200
    assert calls == ["PUT"]


def test_if_none_match_star_creates_only_what_is_absent() -> None:
    view = etag_support(lambda request, pk=1: None if pk == 2 else f"v{pk}")(updated)
    assert view(request("PUT", **{"If-None-Match": "*"}), pk=1).status_code == 412
    assert view(request("PUT", **{"If-None-Match": "*"}), pk=2).status_code == 200


# -- naive datetimes are UTC -------------------------------------------------------------------


@pytest.mark.parametrize("zone", ["UTC", "America/Chicago", "Asia/Kolkata"])
@pytest.mark.parametrize(
    "moment",
    [
        datetime(1994, 11, 6, 8, 49, 37),  # naive: UTC, as Django's condition
        datetime(1994, 11, 6, 8, 49, 37, tzinfo=timezone.utc),
        datetime(1994, 11, 6, 3, 49, 37, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_last_modified_datetimes(zone: str, moment: datetime) -> None:
    with override_settings(TIME_ZONE=zone):  # moves the process's local zone too
        view = last_modified_support(lambda request: moment)(page)
        assert view(request("GET"))["Last-Modified"] == RFC1123
        assert view(request("GET", **{"If-Modified-Since": RFC1123})).status_code == 304
        assert view(request("GET", **{"If-Modified-Since": EARLIER})).status_code == 200
