"""Site-wide isolation: every page of the example site, for every visitor,
is what an uncached render of the same request gives that visitor.

The site is crawled three times with the settings the other example-site
tests use: twice on a LocMem cache (pages in one order, then in the
reverse order, each time on a fresh cache, the visitors taking turns at
going first), and once on Django's ``DummyCache``, where nothing is ever
stored, so every fragment and view renders for the request at hand.
A fragment whose output depends on something its name, vary values and
condition leave out (the user, the tenant, the staff flag, the page, the
language, the engine, another page's context) is then served to someone it
was not rendered for, and that page and visitor fail here.
"""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import transaction
from django.test import Client
from django.test.utils import override_settings
from django.urls import Resolver404, URLPattern, URLResolver

from examples.site.shop.views import EXAMPLES, TEMPLATE_EXAMPLES
from jinja_fragcache.cache import recording

# For pytest-django to set the test database up; the crawls' own fixture
# holds the data, in a transaction of its own.
pytestmark = pytest.mark.django_db

VISITORS = ("anonymous", "alice", "bob", "staff")
ORDERS = ("forward", "reverse")
TENANT_RESOLVER = "examples.site.shop.views.tenant_of"


@dataclass(frozen=True)
class Page:
    """A GET request: a path and the headers that make it another page."""

    path: str
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def id(self) -> str:
        return self.path + "".join(f" {name}={value}" for name, value in self.headers)


def _pages() -> list[Page]:
    pages = [Page("/"), Page("/login/")]
    pages += [Page(path) for path, _ in EXAMPLES]
    for name in TEMPLATE_EXAMPLES:
        pages += [Page(f"/templates/{name}/"), Page(f"/templates/{name}/?engine=jinja")]
    pages += [
        # Parameters that make other pages of the same view.
        Page("/templates/data_table/?page=2"),
        Page("/templates/data_table/?engine=jinja&page=2"),
        Page("/api/entries/?page=2"),
        Page("/api/entries/?page=3"),
        Page("/etag/2/"),
        Page("/api/products/", (("Accept-Language", "fr"),)),
        Page("/api/products/", (("Accept-Language", "de"),)),
        # DRF's browsable API: HTML naming the logged-in user.
        Page("/api/products/", (("Accept", "text/html"),)),
        Page("/api/entries/", (("Accept", "text/html"),)),
        # Errors are pages too.
        Page("/etag/999/"),
        Page("/templates/missing/"),
        Page("/nested/1/invalidate/"),
        Page("/metrics"),
    ]
    assert len({page.id for page in pages}) == len(pages)
    return pages


PAGES = _pages()

# Each response carries its own CSRF token (in forms, and in the JSON the
# browsable API embeds); nothing else may differ.
_CSRF_RE = re.compile(
    r'(name="csrfmiddlewaretoken" value=|"csrfToken": ?)"[A-Za-z0-9]+"'
)
# The stats page shows the process's live counters, rendered per request
# and never cached: only its head is compared.
_STATS_FIGURES_RE = re.compile(r'<p id="summary">.*', re.S)
# So do the Prometheus metrics: only their names and types are compared.
_METRICS_SAMPLES_RE = re.compile(r"^[^#].*\n?", re.M)


@dataclass(frozen=True)
class Response:
    """What a visitor sees of a response, per-request parts masked out."""

    status: int
    content_type: str
    location: str
    body: str
    #: What the request raised (a warning counts: warnings are errors).
    error: str = ""
    #: How each fragment and view lookup was answered: not compared.
    outcomes: tuple[str, ...] = field(default=(), compare=False)


def _seen(page: Page, response: Any, outcomes: tuple[str, ...]) -> Response:
    body = _CSRF_RE.sub(r"\1<csrf>", response.content.decode())
    if page.path == "/cache/":
        body = _STATS_FIGURES_RE.sub("<live figures>", body)
    elif page.path == "/metrics":
        body = _METRICS_SAMPLES_RE.sub("", body)
    return Response(
        response.status_code,
        response.get("Content-Type", ""),
        response.get("Location", ""),
        body,
        outcomes=outcomes,
    )


def _visitors() -> dict[str, Client]:
    from django.contrib.auth.models import User

    clients = {}
    for name in VISITORS:
        clients[name] = client = Client()
        if name != "anonymous":
            client.force_login(User.objects.get(username=name))
    return clients


def _crawl(order: str) -> dict[tuple[str, str], Response]:
    """Every page for every visitor; on each page another visitor goes first,
    so that what one stores is what the next ones are served."""
    clients = _visitors()
    pages = PAGES if order == "forward" else PAGES[::-1]
    seen = {}
    for turn, page in enumerate(pages):
        shift = turn % len(VISITORS)
        visitors = VISITORS[shift:] + VISITORS[:shift]
        if order == "reverse":
            visitors = visitors[::-1]
        for visitor in visitors:
            with recording() as lookups:
                try:
                    response = clients[visitor].get(
                        page.path, headers=dict(page.headers)
                    )
                except Exception as exc:  # one page's failure, not the crawl's
                    seen[page.id, visitor] = Response(0, "", "", "", error=repr(exc))
                    continue
            outcomes = tuple(lookup.outcome for lookup in lookups)
            seen[page.id, visitor] = _seen(page, response, outcomes)
    return seen


def _site(backend: str) -> override_settings:
    """The example site, its fragments and views on a cache of their own.

    The key prefix is the same in every crawl: the debug keys page shows it.
    """
    own = {"BACKEND": backend, "LOCATION": "isolation" + uuid.uuid4().hex}
    return override_settings(
        ROOT_URLCONF="examples.site.urls",
        CACHES={**settings.CACHES, "isolation": own},
        FRAGCACHE={
            "CACHE": "isolation",
            "KEY_PREFIX": "isolation",
            "TENANT_RESOLVER": TENANT_RESOLVER,
        },
    )


@pytest.fixture(scope="module")
def crawls(
    django_db_setup: Any, django_db_blocker: Any
) -> dict[str, dict[tuple[str, str], Response]]:
    """The three crawls, in one transaction that is rolled back."""
    crawled: dict[str, dict[tuple[str, str], Response]] = {}
    with django_db_blocker.unblock(), transaction.atomic():
        call_command("seed_demo", stdout=io.StringIO())
        for order in ORDERS:
            with _site("django.core.cache.backends.locmem.LocMemCache"):
                crawled[order] = _crawl(order)
        with _site("django.core.cache.backends.dummy.DummyCache"):
            crawled["uncached"] = _crawl("forward")
        transaction.set_rollback(True)
    return crawled


def _each_case() -> Iterator[Any]:
    for page in PAGES:
        for visitor in VISITORS:
            for order in ORDERS:
                yield pytest.param(
                    page, visitor, order, id=f"{page.id}-{visitor}-{order}"
                )


@pytest.mark.parametrize(("page", "visitor", "order"), list(_each_case()))
def test_every_page_is_what_an_uncached_render_gives_the_visitor(
    crawls: dict[str, dict[tuple[str, str], Response]],
    page: Page,
    visitor: str,
    order: str,
) -> None:
    cached = crawls[order][page.id, visitor]
    uncached = crawls["uncached"][page.id, visitor]
    assert not uncached.error
    assert not cached.error
    assert cached == uncached


def test_the_crawl_covers_every_view_and_template_example() -> None:
    ids = {page.id for page in PAGES}
    assert {path for path, _ in EXAMPLES} <= ids
    for name in TEMPLATE_EXAMPLES:
        assert {f"/templates/{name}/", f"/templates/{name}/?engine=jinja"} <= ids


def test_the_crawl_reaches_every_url_of_the_site() -> None:
    # A view added to urls.py and not to EXAMPLES is crawled all the same.
    from examples.site.urls import urlpatterns

    paths = [page.path.partition("?")[0].removeprefix("/") for page in PAGES]

    def reached(pattern: URLPattern | URLResolver) -> bool:
        for path in paths:
            try:
                if pattern.resolve(path):
                    return True
            except Resolver404:
                pass
        return False

    assert [str(p.pattern) for p in urlpatterns if not reached(p)] == []


def test_the_cached_crawls_hit_and_the_uncached_one_never_does(
    crawls: dict[str, dict[tuple[str, str], Response]],
) -> None:
    def outcomes(crawl: str) -> set[str]:
        return {o for seen in crawls[crawl].values() for o in seen.outcomes}

    for order in ORDERS:
        assert {"hit", "miss"} <= outcomes(order)
    assert "hit" not in outcomes("uncached") and "stale" not in outcomes("uncached")
    assert crawls["uncached"]["/cache/", "staff"].status == 200
