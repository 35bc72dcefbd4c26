"""Cached views: what is stored, for whom, under which key, and invalidation."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import pytest
from django.test import AsyncClient, Client

from django_bridge.views import invalidate_view_cache
from tests.djangoapp.views import runs


@pytest.fixture(autouse=True)
def fresh(settings: Any, request: pytest.FixtureRequest) -> None:
    settings.FRAGCACHE = {"KEY_PREFIX": "v" + uuid.uuid4().hex[:10]}
    runs.clear()


def body(response: Any) -> str:
    return response.content.decode()


def test_one_response_for_everyone() -> None:
    first = Client().get("/home/")
    second = Client().get("/home/")
    assert body(first) == body(second) == "home 1 "
    assert (first["X-Cache"], second["X-Cache"]) == ("MISS", "HIT")
    assert runs["home"] == 1
    same = {k: v for k, v in first.items() if k != "X-Cache"}
    assert {k: v for k, v in second.items() if k != "X-Cache"} == same


def test_head_is_served_from_the_cached_get() -> None:
    Client().get("/home/")
    head = Client().head("/home/")
    assert head.status_code == 200 and head.content == b"" and head["X-Cache"] == "HIT"
    assert runs["home"] == 1


def test_only_get_and_head() -> None:
    Client().post("/home/")
    Client().post("/home/")
    assert runs["home"] == 2


@pytest.mark.parametrize(
    "kind",
    ["404", "cookie", "private", "no-store", "no-cache", "vary-star", "streaming"],
)
def test_never_stored(kind: str) -> None:
    Client().get(f"/refused/{kind}/")
    second = Client().get(f"/refused/{kind}/")
    assert runs[kind] == 2
    assert second["X-Cache"] == "MISS"


def test_the_query_string_is_in_the_key_without_tracking_parameters() -> None:
    client = Client()
    assert body(client.get("/home/?b=2&a=1")) == "home 1 b=2&a=1"
    assert body(client.get("/home/?a=1&b=2")) == "home 1 b=2&a=1"  # same parameters
    assert body(client.get("/home/?a=1&b=2&utm_source=x&fbclid=y")) == "home 1 b=2&a=1"
    assert body(client.get("/home/?a=2")) == "home 2 a=2"


def test_an_allow_list_of_query_parameters() -> None:
    client = Client()
    client.get("/listing/?page=1&sort=name")
    client.get("/listing/?page=1&sort=price")
    client.get("/listing/?page=2")
    assert runs["listing"] == 2


def test_the_key_follows_the_vary_headers_learned() -> None:
    client = Client()
    assert body(client.get("/localized/", HTTP_ACCEPT_LANGUAGE="fr")) == "fr 1"
    assert body(client.get("/localized/", HTTP_ACCEPT_LANGUAGE="fr")) == "fr 1"
    assert body(client.get("/localized/", HTTP_ACCEPT_LANGUAGE="de")) == "de 2"
    assert body(client.get("/localized/", HTTP_ACCEPT_LANGUAGE="fr")) == "fr 1"
    assert body(client.get("/localized/", HTTP_ACCEPT_LANGUAGE="de")) == "de 2"


def test_the_response_that_teaches_a_vary_header_is_stored_under_it() -> None:
    # As Django's learn_cache_key: the first response is not lost.
    first = Client().get("/localized/", HTTP_ACCEPT_LANGUAGE="fr")
    second = Client().get("/localized/", HTTP_ACCEPT_LANGUAGE="fr")
    other = Client().get("/localized/", HTTP_ACCEPT_LANGUAGE="de")
    assert (first["X-Cache"], second["X-Cache"], other["X-Cache"]) == (
        "MISS",
        "HIT",
        "MISS",
    )
    assert (body(first), body(second), body(other)) == ("fr 1", "fr 1", "de 2")
    assert second["Vary"] == first["Vary"]
    assert runs["localized"] == 2


def test_an_async_view_stores_the_response_that_teaches_a_vary_header() -> None:
    async def fetch(language: str) -> Any:
        return await AsyncClient().get(
            "/async-localized/", headers={"Accept-Language": language}
        )

    first, second, other = (asyncio.run(fetch(lang)) for lang in ("fr", "fr", "de"))
    assert (first["X-Cache"], second["X-Cache"], other["X-Cache"]) == (
        "MISS",
        "HIT",
        "MISS",
    )
    assert (body(second), body(other)) == ("fr 1", "de 2")
    assert runs["async-localized"] == 2


def test_learning_a_vary_header_stores_nothing_that_is_refused() -> None:
    Client().get("/private-localized/", HTTP_ACCEPT_LANGUAGE="fr")
    second = Client().get("/private-localized/", HTTP_ACCEPT_LANGUAGE="fr")
    assert (body(second), second["X-Cache"]) == ("private 2", "MISS")


@pytest.mark.django_db
def test_a_shared_page_is_never_served_to_or_stored_for_a_logged_in_user() -> None:
    from django.contrib.auth.models import User

    assert body(Client().get("/greeting/")) == "hello stranger 1"
    member = Client()
    member.force_login(User.objects.create_user("ann"))
    assert body(member.get("/greeting/")).startswith("hello ann")
    assert body(Client().get("/greeting/")).startswith("hello stranger")
    assert (
        body(Client().get("/greeting/", HTTP_AUTHORIZATION="Bearer x"))
        != "hello stranger 1"
    )


@pytest.mark.django_db
def test_per_user() -> None:
    from django.contrib.auth.models import User

    ann, bob = Client(), Client()
    ann.force_login(User.objects.create_user("ann"))
    bob.force_login(User.objects.create_user("bob"))
    assert body(ann.get("/dashboard/")) == "dashboard of ann 1"
    assert body(bob.get("/dashboard/")) == "dashboard of bob 2"
    assert body(Client().get("/dashboard/")) == "dashboard of anonymous 3"
    assert body(ann.get("/dashboard/")) == "dashboard of ann 1"
    assert body(Client().get("/dashboard/")) == "dashboard of anonymous 3"


def tenant_of(request: Any) -> str | None:
    return request.headers.get("X-Tenant")


def test_per_tenant(settings: Any) -> None:
    settings.FRAGCACHE = {
        **settings.FRAGCACHE,
        "TENANT_RESOLVER": "tests.test_views.tenant_of",
    }
    assert body(Client().get("/reports/", HTTP_X_TENANT="a")) == "reports 1"
    assert body(Client().get("/reports/", HTTP_X_TENANT="b")) == "reports 2"
    assert body(Client().get("/reports/", HTTP_X_TENANT="a")) == "reports 1"
    assert body(Client().get("/reports/")) == "reports 3"  # no tenant: not cached
    assert body(Client().get("/reports/")) == "reports 4"


def test_request_tenant_in_the_django_tenants_convention(settings: Any) -> None:
    from django.test import RequestFactory

    from tests.djangoapp import views

    class Tenant:
        pk = None
        schema_name = "acme"

    request = RequestFactory().get("/reports/")
    request.tenant = Tenant()  # type: ignore[attr-defined]
    views.reports(request)
    views.reports(request)
    assert runs["reports"] == 1


def test_invalidate_by_url_name_and_path() -> None:
    client = Client()
    client.get("/home/?a=1")
    client.get("/home/?a=2")
    assert invalidate_view_cache("home", "/home/")
    client.get("/home/?a=1")
    client.get("/home/?a=2")
    assert runs["home"] == 4
    client.get("/unnamed/")
    client.get("/unnamed/again/")
    assert invalidate_view_cache("home")  # the named URL's every path
    client.get("/home/?a=1")
    client.get("/unnamed/")  # an unnamed URL: kept under the view's path
    assert runs["home"] == 7
    assert invalidate_view_cache("tests.djangoapp.views.home")
    client.get("/unnamed/")
    client.get("/unnamed/again/")
    assert runs["home"] == 9


def test_async_and_class_based_views() -> None:
    async def fetch(path: str) -> str:
        return body(await AsyncClient().get(path))

    assert asyncio.run(fetch("/async-home/")) == "async 1"
    assert asyncio.run(fetch("/async-home/")) == "async 1"
    for path, label in (("/class-home/", "class"), ("/method-home/", "method")):
        assert body(Client().get(path)) == body(Client().get(path)) == f"{label} 1"


def test_a_down_cache_still_answers(settings: Any) -> None:
    from .support import unreachable_redis_caches

    settings.CACHES = unreachable_redis_caches()
    assert body(Client().get("/home/")) == "home 1 "
    assert body(Client().get("/home/")) == "home 2 "


def test_an_expired_page_is_served_stale_while_another_request_refreshes_it() -> None:
    import time

    from django.http import HttpRequest, HttpResponse
    from django.test import RequestFactory

    from django_bridge.views import cache_view
    from jinja_fragcache import FragmentCache, MemoryBackend
    from jinja_fragcache.keys import lock_key

    backend = MemoryBackend()
    fragments = FragmentCache(backend, stale_grace=30)

    @cache_view(0.2, cache=fragments, key_prefix="stale-page")
    def page(request: HttpRequest) -> HttpResponse:
        runs["stale"] += 1
        return HttpResponse(f"page {runs['stale']}")

    assert page(RequestFactory().get("/p/")).content == b"page 1"
    time.sleep(0.3)
    # Another request is re-rendering it: this one gets the stale copy.
    (entry_key,) = [
        k
        for k in backend._data
        if k.startswith(fragments.prefix + ":2:f:") and not k.endswith(":v")
    ]
    backend.add(lock_key(entry_key), b"busy", 60)
    stale = page(RequestFactory().get("/p/"))
    assert (stale.content, stale["X-Cache"]) == (b"page 1", "STALE")
    assert runs["stale"] == 1
    backend.delete(lock_key(entry_key))
    assert page(RequestFactory().get("/p/")).content == b"page 2"  # refreshed


def test_credentials_are_cached_per_credential_when_the_response_varies_on_them() -> (
    None
):
    client = Client()
    client.get("/token/", HTTP_AUTHORIZATION="Bearer a")  # not served or stored yet
    client.get("/token/")  # learns Vary: Authorization from an anonymous request
    assert (
        body(client.get("/token/", HTTP_AUTHORIZATION="Bearer a")) == "for Bearer a 3"
    )
    assert (
        body(client.get("/token/", HTTP_AUTHORIZATION="Bearer a")) == "for Bearer a 3"
    )
    assert (
        body(client.get("/token/", HTTP_AUTHORIZATION="Bearer b")) == "for Bearer b 4"
    )


def test_the_host_is_in_the_key_only_when_asked() -> None:
    assert body(Client().get("/per-host/", HTTP_HOST="a.example")) == "a.example 1"
    assert body(Client().get("/per-host/", HTTP_HOST="b.example")) == "b.example 2"
    assert body(Client().get("/per-host/", HTTP_HOST="a.example")) == "a.example 1"
    assert body(Client().get("/home/", HTTP_HOST="a.example")) == "home 1 "
    assert body(Client().get("/home/", HTTP_HOST="b.example")) == "home 1 "


@pytest.mark.django_db(transaction=True)
def test_an_async_view_for_a_logged_in_user() -> None:
    from asgiref.sync import async_to_sync
    from django.contrib.auth.models import User

    user = User.objects.create_user("carol")

    async def fetch() -> Any:
        client = AsyncClient()
        await client.aforce_login(user)
        # A session cookie: knowing the user needs the database.
        return await client.get("/async-home/")

    response = async_to_sync(fetch)()
    assert response.status_code == 200 and response["X-Cache"] == "MISS"


@pytest.mark.django_db
def test_a_response_that_writes_the_session_is_never_stored() -> None:
    # SessionMiddleware adds the cookie after the view: a stored copy would
    # give every new visitor the first one's body and no session of their own.
    first, second, third = Client(), Client(), Client()
    assert body(first.get("/visitor/")) == "visitor 1"
    assert body(second.get("/visitor/")) == "visitor 2"
    response = third.get("/visitor/")
    assert body(response) == "visitor 3"
    assert "sessionid" in response.cookies
    assert body(first.get("/visitor/")) == "visitor 1"


def _tokens(response: Any) -> set[str]:
    return set(re.findall(r"[A-Za-z0-9]{64}", body(response)))


def _valid(client: Client, token: str) -> bool:
    from django.middleware.csrf import _does_token_match  # type: ignore[attr-defined]

    return bool(_does_token_match(token, client.cookies["csrftoken"].value))


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/shared-form/", "/user-form/", "/tenant-form/"])
def test_a_cached_page_with_a_csrf_form_and_meta_tag_holds_each_visitors_token(
    path: str, settings: Any
) -> None:
    from django.contrib.auth.models import User

    settings.DEBUG = True  # a refusal would be a 500 here
    settings.FRAGCACHE = {**settings.FRAGCACHE, "TENANT_RESOLVER": lambda r: "acme"}
    user = User.objects.create_user("ann", password="pw")
    first, second = Client(), Client()
    if path == "/user-form/":
        first.force_login(user)
        second.force_login(user)  # the same user, another browser
    one = first.get(path)
    two = second.get(path)
    assert one["X-Cache"] == "MISS" and two["X-Cache"] == "HIT"
    assert runs["form"] == 1
    mine = sorted(_tokens(one))[0]
    assert len(_tokens(two)) == 2 and not _tokens(one) & _tokens(two)
    assert all(_valid(second, token) for token in _tokens(two))
    assert not _valid(second, mine)


def _identity_view(request: Any, greeting: str = "hi") -> Any:
    from django.http import HttpResponse

    runs["identity"] += 1
    return HttpResponse(f"{greeting} {runs['identity']}")


class _CallableView:
    def __call__(self, request: Any) -> Any:
        return _identity_view(request, "called")


def _cached_name(view: Any) -> set[str]:
    """The names the cached view's entries are kept under, after one request."""
    from django.test import RequestFactory

    from django_bridge.views import cache_view
    from jinja_fragcache import FragmentCache, MemoryBackend

    fragments = FragmentCache(MemoryBackend())
    cached = cache_view(300, cache=fragments)(view)
    first = cached(RequestFactory().get("/x/"))
    second = cached(RequestFactory().get("/x/"))
    assert (first["X-Cache"], second["X-Cache"]) == ("MISS", "HIT")
    return set(fragments.stats())


def test_a_partial_is_kept_under_its_functions_path() -> None:
    import functools

    view = functools.partial(_identity_view, greeting="hello")
    assert _cached_name(view) == {"view:tests.test_views._identity_view"}
    assert runs["identity"] == 1


def test_a_callable_instance_is_kept_under_its_class_path() -> None:
    assert _cached_name(_CallableView()) == {"view:tests.test_views._CallableView"}
    assert runs["identity"] == 1


def test_a_mock_is_kept_under_its_class_path() -> None:
    from unittest import mock

    from django.http import HttpResponse

    view = mock.Mock(return_value=HttpResponse("mocked"))
    assert _cached_name(view) == {"view:unittest.mock.Mock"}
    assert view.call_count == 1


def test_a_view_that_is_not_callable_is_a_clear_error() -> None:
    from django_bridge.views import cache_view

    with pytest.raises(TypeError, match="key_prefix="):
        cache_view(300)("not a view")  # type: ignore[type-var]
