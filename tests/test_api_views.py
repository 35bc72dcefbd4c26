"""DRF responses: rendered bytes only, keyed on the renderer, pages apart."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from rest_framework.test import APIClient

from django_bridge.views import invalidate_view_cache
from tests.djangoapp.views import runs


@pytest.fixture(autouse=True)
def fresh(settings: Any) -> None:
    settings.FRAGCACHE = {"KEY_PREFIX": "api" + uuid.uuid4().hex[:10]}
    runs.clear()


def test_rendered_bytes_are_cached() -> None:
    first = APIClient().get("/api/products/", HTTP_ACCEPT="application/json")
    second = APIClient().get("/api/products/", HTTP_ACCEPT="application/json")
    assert (
        first.json()
        == second.json()
        == {
            "language": "-",
            "run": 1,
            "items": [{"id": 1, "name": "item 1"}, {"id": 2, "name": "item 2"}],
        }
    )
    assert second["X-Cache"] == "HIT"
    assert second["Content-Type"] == "application/json"
    assert runs["products"] == 1


def test_the_negotiated_renderer_is_in_the_key() -> None:
    client = APIClient()
    client.get("/api/products/", HTTP_ACCEPT="application/json")
    html = client.get("/api/products/", HTTP_ACCEPT="text/html")
    assert html["Content-Type"].startswith("text/html")
    assert (
        client.get("/api/products/?format=json")["Content-Type"] == "application/json"
    )
    assert runs["products"] == 3
    assert client.get("/api/products/", HTTP_ACCEPT="text/html")["X-Cache"] == "HIT"


def test_listed_headers_are_in_the_key() -> None:
    client = APIClient()
    assert (
        client.get("/api/products/", HTTP_ACCEPT_LANGUAGE="fr").json()["language"]
        == "fr"
    )
    assert (
        client.get("/api/products/", HTTP_ACCEPT_LANGUAGE="de").json()["language"]
        == "de"
    )
    assert client.get("/api/products/", HTTP_ACCEPT_LANGUAGE="fr").json()["run"] == 1


def test_only_2xx_and_only_get() -> None:
    client = APIClient()
    assert client.get("/api/products/?fail=1").status_code == 400
    assert client.get("/api/products/?fail=1").status_code == 400
    client.post("/api/products/")
    client.post("/api/products/")
    assert runs["products"] == 4


@pytest.mark.django_db
def test_a_staff_browsable_page_is_never_shown_to_others() -> None:
    from django.contrib.auth.models import User

    staff = APIClient()
    staff.force_login(User.objects.create_user("boss", is_staff=True))
    staff.get("/api/products/", HTTP_ACCEPT="text/html")
    anonymous = APIClient().get("/api/products/", HTTP_ACCEPT="text/html")
    assert b"boss" not in anonymous.content
    assert anonymous["X-Cache"] == "MISS"


def test_each_page_has_its_entry_and_one_call_clears_them_all() -> None:
    client = APIClient()
    page1 = client.get("/api/items/?page=1").json()
    page2 = client.get("/api/items/?page=2").json()
    assert [i["id"] for i in page1["results"]] == [1, 2]
    assert [i["id"] for i in page2["results"]] == [3, 4]
    assert client.get("/api/items/?page=2")["X-Cache"] == "HIT"
    assert runs["items"] == 2
    assert invalidate_view_cache("api-items", "/api/items/")
    client.get("/api/items/?page=1")
    client.get("/api/items/?page=2")
    assert runs["items"] == 4


def test_a_list_that_ignores_pagination_can_leave_it_out_of_the_key() -> None:
    from django.test import RequestFactory
    from rest_framework.decorators import api_view
    from rest_framework.response import Response

    from django_bridge.views import cache_api_list

    @cache_api_list(60, per_page=False, key_prefix="whole-list")
    @api_view(["GET"])
    def whole(request: Any) -> Response:
        runs["whole"] += 1
        return Response({"run": runs["whole"]})

    for query in ("", "?page=2", "?limit=5&offset=10", "?cursor=abc"):
        request = RequestFactory().get(
            "/whole/" + query, HTTP_ACCEPT="application/json"
        )
        assert whole(request).status_code == 200
    assert runs["whole"] == 1
