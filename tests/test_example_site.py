"""The example site: every view as anonymous, regular, staff and another
tenant's user; every template example in both engines; the layout, the
fragment panel, the "Change the data" buttons, logging in; on Redis, the
warm command filling what the web server reads."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from examples.site import settings as site_settings
from examples.site.shop.views import EXAMPLES, TEMPLATE_EXAMPLES

from .support import ROOT, gunicorn

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def site(settings: Any, db: Any) -> None:
    settings.ROOT_URLCONF = "examples.site.urls"
    # The site's own middleware (its fragment panel) and login landing.
    settings.MIDDLEWARE = [
        "tests.djangoapp.placeholders.NoPlaceholders",
        *site_settings.MIDDLEWARE,
    ]
    settings.LOGIN_REDIRECT_URL = site_settings.LOGIN_REDIRECT_URL
    settings.FRAGCACHE = {
        "KEY_PREFIX": "site" + uuid.uuid4().hex[:8],
        "TENANT_RESOLVER": "examples.site.shop.views.tenant_of",
    }
    call_command("seed_demo", stdout=None)


def login(name: str, **options: Any) -> Client:
    from django.contrib.auth.models import User

    client = Client(**options)
    client.force_login(User.objects.get(username=name))
    return client


PANEL = re.compile(r'<aside id="fragment-panel">.*?</aside>\n', re.S)


def text(response: Any) -> str:
    # Every response has its own CSRF token and its own panel; the rest
    # must be the same.
    return PANEL.sub(
        "",
        re.sub(
            r'name="csrfmiddlewaretoken" value="\w+"', "", response.content.decode()
        ),
    )


def panel(response: Any) -> list[tuple[str, str]]:
    """The panel's rows, (name, OUTCOME), in the order of the lookups."""
    (found,) = PANEL.findall(response.content.decode())
    return re.findall(r"<td>([^<]*)</td><td>([A-Z]+)</td>", found)


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
    assert 'class="edit"' in text(login("staff").get("/conditional/"))
    assert 'class="edit"' not in text(login("alice").get("/conditional/"))
    assert 'class="edit"' in text(login("staff").get("/conditional/"))


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
                r'<code class="key">site\w+:2:f:\{(sidebar|profile)\}:[0-9a-f]{40}</code>',
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


def test_logging_in_lands_on_the_index() -> None:
    response = Client().post("/login/", {"username": "alice", "password": "demo"})
    assert response.status_code == 302 and response["Location"] == "/"


#: The site's HTML pages with its layout; DRF's browsable API and the stats
#: page have their own, and the panel all the same.
LAYOUT_PAGES = [
    "/",
    "/login/",
    *(path for path, _ in EXAMPLES if not path.startswith(("/api/", "/cache/"))),
    *(f"/templates/{name}/" for name in TEMPLATE_EXAMPLES),
    *(f"/templates/{name}/?engine=jinja" for name in TEMPLATE_EXAMPLES),
]


@pytest.mark.parametrize("visitor", ["anonymous", "alice"])
def test_every_page_has_the_layout_the_stylesheet_and_one_panel(visitor: str) -> None:
    client = Client() if visitor == "anonymous" else login(visitor)
    for path in LAYOUT_PAGES:
        html = client.get(path).content.decode()
        assert '<link rel="stylesheet" href="/static/shop/site.css">' in html, path
        assert '<nav class="site"><a href="/home/">Home</a>' in html, path
        assert html.count('<aside id="fragment-panel">') == 1, path
        assert html.index("</main>") < html.index('<aside id="fragment-panel">'), path
    for path in ("/api/entries/", "/api/products/"):
        html = client.get(path, HTTP_ACCEPT="text/html").content.decode()
        assert html.count('<aside id="fragment-panel">') == 1, path
    json = client.get("/api/entries/", HTTP_ACCEPT="application/json")
    assert b"fragment-panel" not in json.content
    stylesheet = ROOT / "examples" / "site" / "shop" / "static" / "shop" / "site.css"
    assert "aside#fragment-panel" in stylesheet.read_text()


def test_the_panel_shows_a_miss_then_a_hit_with_key_and_timings() -> None:
    first = login("alice").get("/templates/sidebar/")
    assert panel(first) == [("site_nav", "MISS"), ("sidebar", "MISS")]
    again = login("bob").get("/templates/sidebar/?engine=jinja")
    assert panel(again) == [("site_nav", "HIT"), ("sidebar", "MISS")]  # Globex
    third = login("alice").get("/templates/sidebar/?engine=jinja")
    assert panel(third) == [("site_nav", "HIT"), ("sidebar", "HIT")]
    html = PANEL.search(third.content.decode()).group(0)  # type: ignore[union-attr]
    row = re.search(
        r"<td>sidebar</td><td>HIT</td><td>1</td>\s*"
        r"<td>(\d+\.\d{3})</td><td>(\d+\.\d{3})</td>\s*"
        r"<td><code>site\w+:2:f:\{sidebar\}:[0-9a-f]{40}</code></td>",
        html,
    )
    assert row, html
    assert float(row.group(2)) == 0  # a hit renders nothing
    assert "2 lookups" in html and "2 HIT" in html and "for alice" in html


def test_a_cached_view_shows_the_panel_of_the_request_that_reads_it() -> None:
    first = Client().get("/home/")
    second = Client().get("/home/")
    assert (first["X-Cache"], second["X-Cache"]) == ("MISS", "HIT")
    assert panel(first) == [
        ("site_nav", "MISS"),
        ("home_latest", "MISS"),
        ("view:home", "MISS"),
    ]
    # The stored response was taken before the panel was added: a hit's
    # panel is its own, and nothing inside a hit is looked up.
    assert panel(second) == [("view:home", "HIT")]
    assert text(first) == text(second)


def test_no_cache_entry_ever_holds_a_panel() -> None:
    from django.core.cache import caches

    for client in (Client(), login("alice"), login("staff")):
        for path in LAYOUT_PAGES:
            client.get(path)
    stored = [
        pickle.loads(value)
        for value in caches["default"]._cache.values()  # type: ignore[attr-defined]
    ]
    assert any("view:home" in str(value) or "<nav" in str(value) for value in stored)
    assert not [value for value in stored if "fragment-panel" in str(value)]


def _first_entry(tenant: str) -> Any:
    from examples.site.shop.models import Entry

    return Entry.objects.filter(tenant__slug=tenant).first()


def test_change_the_data_on_nested_rerenders_the_list_and_one_price() -> None:
    alice = login("alice")
    alice.get("/nested/")
    assert ("price_list", "HIT") in panel(alice.get("/nested/"))
    entry = _first_entry("acme")
    changed = alice.post("/nested/", {"change": "price"})
    assert changed.status_code == 302
    assert changed["Location"] == "/nested/#fragment-panel"
    after = alice.get("/nested/")
    assert f"<li>{entry.title} <b>{entry.price + 1}</b></li>" in text(after)
    rows = panel(after)
    assert rows.count(("price", "MISS")) == 1  # the changed price
    assert rows.count(("price", "HIT")) == 11  # the others, kept
    assert ("price_list", "MISS") in rows and ("site_nav", "HIT") in rows
    assert _first_entry("globex").price == 10  # only the visitor's data


@pytest.mark.parametrize(
    ("path", "fragment"), [("/entries/", "entry_list"), ("/tags/", "best")]
)
def test_change_the_data_on_the_tagged_pages(
    path: str, fragment: str, django_capture_on_commit_callbacks: Any
) -> None:
    alice = login("alice")
    alice.get(path)
    assert (fragment, "HIT") in panel(alice.get(path))
    entry = _first_entry("acme")
    with django_capture_on_commit_callbacks(execute=True):
        changed = alice.post(path, {"change": "price"})
    assert changed["Location"] == path + "#fragment-panel"
    after = alice.get(path)
    assert f"<li>{entry.title} <b>{entry.price + 1}</b></li>" in text(after)
    assert (fragment, "MISS") in panel(after) and ("site_nav", "HIT") in panel(after)


@pytest.mark.parametrize("path", ["/nested/", "/entries/", "/tags/"])
def test_change_the_data_is_a_csrf_protected_post(path: str) -> None:
    page = login("alice").get(path).content.decode()
    assert re.search(
        f'<form method="post" action="{path}"><input type="hidden" '
        r'name="csrfmiddlewaretoken" value="\w+">(<button>[^<]*</button>)?'
        r'<button name="change" value="price">Change the data</button>',
        page,
    )
    price = _first_entry("acme").price
    client = login("alice", enforce_csrf_checks=True)
    assert client.post(path, {"change": "price"}).status_code == 403
    assert _first_entry("acme").price == price


def _manage(env: dict[str, str], *command: str) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "site" / "manage.py"), *command],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "examples.site.settings", **env},
        check=True,
        capture_output=True,
    )


@contextmanager
def served_site(
    tmp_path: Path, redis_url: str = ""
) -> Iterator[tuple[str, dict[str, str]]]:
    """The example site under gunicorn, with its own settings, a fresh
    seeded database, and Redis when *redis_url* is given; yields the base
    URL and the environment, for ``manage.py`` commands on the same site."""
    env = {"EXAMPLE_DB": str(tmp_path / "site.sqlite3"), "REDIS_URL": redis_url}
    _manage(env, "migrate", "-v0")
    _manage(env, "seed_demo")
    with gunicorn(
        "examples.site.wsgi:application",
        {**env, "DJANGO_SETTINGS_MODULE": "examples.site.settings"},
    ) as base:
        yield base, env


@pytest.mark.parametrize("cache", ["redis", "in-process"])
def test_on_redis_the_warm_command_fills_what_the_web_server_reads(
    cache: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    redis_url = (
        request.getfixturevalue("restartable_redis")[0] if cache == "redis" else ""
    )
    with served_site(tmp_path, redis_url) as (base, env):
        _manage(env, "warm_cache", "--no-progress")
        with urllib.request.urlopen(base + "/home/") as home:
            x_cache = home.headers["X-Cache"]
        with urllib.request.urlopen(base + "/cards/") as cards:
            rows = re.findall(r"<td>row</td><td>([A-Z]+)</td>", cards.read().decode())
    if cache == "redis":  # the command's process and the server share one cache
        assert (x_cache, rows) == ("HIT", ["HIT"])
    else:  # each process its own: the warming did not reach the server
        assert (x_cache, rows) == ("MISS", ["MISS"])
