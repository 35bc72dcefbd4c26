"""The example site: every view as anonymous, regular, staff and another
tenant's user; every template example in both engines."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from examples.site.shop.views import EXAMPLES, TEMPLATE_EXAMPLES

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def site(settings: Any, db: Any) -> None:
    settings.ROOT_URLCONF = "examples.site.urls"
    settings.FRAGCACHE = {
        "KEY_PREFIX": "site" + uuid.uuid4().hex[:8],
        "TENANT_RESOLVER": "examples.site.shop.views.tenant_of",
    }
    call_command("seed_demo", stdout=None)


def login(name: str) -> Client:
    from django.contrib.auth.models import User

    client = Client()
    client.force_login(User.objects.get(username=name))
    return client


def text(response: Any) -> str:
    # Every response has its own CSRF token; the rest must be the same.
    return re.sub(
        r'name="csrfmiddlewaretoken" value="\w+"', "", response.content.decode()
    )


def test_the_index_lists_15_views_and_10_templates() -> None:
    html = text(Client().get("/"))
    assert len(EXAMPLES) == 15 and len(TEMPLATE_EXAMPLES) == 10
    for path, _ in EXAMPLES:
        assert f'href="{path}"' in html
    assert html.count("?engine=jinja") == 10


def test_home_is_shared_by_anonymous_visitors_only() -> None:
    assert Client().get("/home/")["X-Cache"] == "MISS"
    assert Client().get("/home/")["X-Cache"] == "HIT"
    assert login("alice").get("/home/")["X-Cache"] == "MISS"


def test_dashboard_per_user() -> None:
    assert "alice" in text(login("alice").get("/dashboard/"))
    assert "bob" in text(login("bob").get("/dashboard/"))
    assert "anonymous" in text(Client().get("/dashboard/"))
    assert login("alice").get("/dashboard/")["X-Cache"] == "HIT"


def test_reports_per_tenant_never_cross() -> None:
    acme = text(login("alice").get("/reports/"))
    globex = text(login("bob").get("/reports/"))
    assert "Acme item 1" in acme and "Globex" not in acme
    assert "Globex item 1" in globex and "Acme" not in globex
    assert login("alice").get("/reports/")["X-Cache"] == "HIT"
    assert Client().get("/reports/")["X-Cache"] == "MISS"  # no tenant: not cached
    assert Client().get("/reports/")["X-Cache"] == "MISS"


def test_api_products_vary_on_language() -> None:
    client = Client()
    assert (
        client.get(
            "/api/products/", HTTP_ACCEPT="application/json", HTTP_ACCEPT_LANGUAGE="fr"
        ).json()["title"]
        == "Produits"
    )
    assert (
        client.get(
            "/api/products/", HTTP_ACCEPT="application/json", HTTP_ACCEPT_LANGUAGE="de"
        ).json()["title"]
        == "Produkte"
    )
    again = client.get(
        "/api/products/", HTTP_ACCEPT="application/json", HTTP_ACCEPT_LANGUAGE="fr"
    )
    assert again.json()["title"] == "Produits" and again["X-Cache"] == "HIT"


def test_paginated_api() -> None:
    client = Client()
    page2 = client.get("/api/entries/?page=2", HTTP_ACCEPT="application/json").json()
    assert page2["count"] == 24 and len(page2["results"]) == 10
    assert (
        client.get("/api/entries/?page=2", HTTP_ACCEPT="application/json")["X-Cache"]
        == "HIT"
    )


def test_etag_and_last_modified_304() -> None:
    client = Client()
    first = client.get("/etag/1/")
    assert client.get("/etag/1/", HTTP_IF_NONE_MATCH=first["ETag"]).status_code == 304
    assert client.get("/etag/999/").status_code == 404
    modified = client.get("/last-modified/")["Last-Modified"]
    assert (
        client.get("/last-modified/", HTTP_IF_MODIFIED_SINCE=modified).status_code
        == 304
    )


def test_class_based() -> None:
    assert Client().get("/class-based/")["X-Cache"] == "MISS"
    assert Client().get("/class-based/")["X-Cache"] == "HIT"


def test_adding_an_entry_refreshes_the_list(
    django_capture_on_commit_callbacks: Any,
) -> None:
    alice = login("alice")
    assert "Fresh" not in text(alice.get("/entries/"))
    with django_capture_on_commit_callbacks(execute=True):
        alice.post("/entries/", {"title": "Fresh", "price": "5"})
    assert "Fresh" in text(alice.get("/entries/"))
    assert "Fresh" not in text(login("bob").get("/entries/"))  # another tenant


def test_batch_warming() -> None:
    page = text(Client().post("/warm/"))
    assert re.search(r"warmed 1, failed 0", page)
    assert Client().get("/").status_code == 200


def test_cards_and_nested_invalidation() -> None:
    from examples.site.shop.models import Entry

    assert "<td>Acme item 1</td>" in text(Client().get("/cards/"))
    first = Entry.objects.get(pk=1)
    assert f"<b>{first.price}</b>" in text(Client().get("/nested/"))
    Entry.objects.filter(pk=1).update(price=999)  # behind the cache's back
    assert "<b>999</b>" not in text(Client().get("/nested/"))
    Client().post("/nested/1/invalidate/")
    assert "<b>999</b>" in text(Client().get("/nested/"))


def test_conditional_staff_and_regular() -> None:
    assert "edit" in text(login("staff").get("/conditional/"))
    assert "edit" not in text(login("alice").get("/conditional/"))
    assert "edit" in text(login("staff").get("/conditional/"))


def test_tag_invalidation() -> None:
    from examples.site.shop.models import Entry

    assert "Acme item 1" in text(Client().get("/tags/"))
    Entry.objects.filter(pk=1).update(title="Renamed")
    assert "Renamed" not in text(Client().get("/tags/"))
    Client().post("/tags/")
    assert "Renamed" in text(Client().get("/tags/"))


def test_stats_page_for_staff_only() -> None:
    Client().get("/home/")
    assert Client().get("/cache/").status_code == 302
    assert login("alice").get("/cache/").status_code == 403
    page = text(login("staff").get("/cache/"))
    assert 'id="hit-rate-chart"' in page and "view" in page


@pytest.mark.parametrize("engine", ["dtl", "jinja"])
@pytest.mark.parametrize("name", TEMPLATE_EXAMPLES)
def test_every_template_example_in_both_engines(name: str, engine: str) -> None:
    path = f"/templates/{name}/" + ("?engine=jinja" if engine == "jinja" else "")
    first = login("alice").get(path)
    assert first.status_code == 200
    assert text(first) == text(login("alice").get(path))  # the cached copy is the same
    other = text(login("bob").get(path))
    if name in (
        "profile",
        "sidebar",
        "tenant_menu",
        "data_table",
        "chart",
        "invalidation",
        "best_practices",
    ):
        assert "Acme" not in other  # per user or per tenant: never crosses


@pytest.mark.parametrize("engine", ["dtl", "jinja"])
def test_debug_keys_show_keys(engine: str) -> None:
    page = text(
        Client().get(
            "/templates/debug_keys/" + ("?engine=jinja" if engine == "jinja" else "")
        )
    )
    assert (
        len(
            re.findall(
                r'<code class="key">site\w+:1:f:(sidebar|profile):[0-9a-f]{40}</code>',
                page,
            )
        )
        == 2
    )


def test_both_engines_share_the_template_examples_entries() -> None:
    from examples.site.shop.models import Entry

    alice = login("alice")
    dtl = text(alice.get("/templates/tenant_menu/"))
    Entry.objects.filter(pk=1).update(title="Changed")
    jinja = text(alice.get("/templates/tenant_menu/?engine=jinja"))
    assert "Changed" not in jinja  # a hit on the entry DTL wrote
    assert re.search(r"<menu.*</menu>", dtl, re.S).group(0) == re.search(
        r"<menu.*</menu>", jinja, re.S
    ).group(0)  # type: ignore[union-attr]


@pytest.mark.parametrize("name", TEMPLATE_EXAMPLES)
def test_the_twins_render_the_same_page(settings: Any, name: str) -> None:
    # The twins share their cache entries, so each must render what the
    # other would: rendered uncached, the pages are the same, byte for byte
    # (but for Jinja dropping the file's last newline).
    settings.CACHES = {
        **settings.CACHES,
        "uncached": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
    }
    settings.FRAGCACHE = {**settings.FRAGCACHE, "CACHE": "uncached"}
    for visitor in ("alice", "staff"):
        client = login(visitor)
        dtl = text(client.get(f"/templates/{name}/"))
        jinja = text(client.get(f"/templates/{name}/?engine=jinja"))
        assert dtl.removesuffix("\n") == jinja
