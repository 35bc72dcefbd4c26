"""The tags through django-jinja's backend (``django_jinja.backend.Jinja2``)
with our environment factory: the bridge's tag-semantics suite run once more
on it, and views that render, vary, invalidate and carry a CSRF token."""

from __future__ import annotations

from collections import Counter
from typing import Any

import jinja2
import pytest
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render as render_to_response
from django.template import engines
from django.test import Client
from django.urls import path

from django_bridge import get_cache_stats, invalidate_fragment, invalidate_tags

from .support import PLACEHOLDER

# The suite's tests take their templates from the ``render`` fixture, which
# this module defines for django-jinja; imported here, pytest runs them
# again with it.
from .test_django_bridge import (  # noqa: F401 - collected by pytest
    Render,
    page_token,
    test_bad_computed_timeout_names_the_value_and_line,
    test_cache_each_shares_keys_with_a_loop,
    test_dtl_collections_nested_in_a_fragment,
    test_if_condition,
    test_invalidate_fragment_command,
    test_invalidate_on_save_runs_after_commit,
    test_invalidate_tag_and_key_for,
    test_miss_then_hit,
    test_names_and_vary_values,
    test_russian_dolls,
    test_tags_and_invalidation,
    test_timeouts_zero_and_none,
    valid_for,
)
from .test_django_bridge import cache_settings as _cache_settings

# The backends matrix (LocMem, django-redis, memcached), by the same name.
cache_settings = _cache_settings

ENGINE = "django_jinja"

TEMPLATES = {
    # url() is django-jinja's global: Django's own Jinja2 backend has none.
    "card.jinja": (
        '{% cache_fragment 300 dj_card pk tags="dj-cards" %}'
        "card {{ pk }} ({{ url('dj-card', pk=pk) }}) render {{ renders(pk) }}"
        "{% endcache_fragment %}"
    ),
    # {% csrf_token %} is django-jinja's tag.
    "form.jinja": (
        "{% cache_fragment 300 dj_form %}<form>{% csrf_token %}</form>"
        "{% endcache_fragment %}"
    ),
}

RENDERS: Counter[str] = Counter()


def renders(pk: object) -> int:
    RENDERS[str(pk)] += 1
    return RENDERS[str(pk)]


def card(request: HttpRequest, pk: int) -> HttpResponse:
    context = {"pk": pk, "renders": renders}
    return render_to_response(request, "card.jinja", context, using=ENGINE)


def save_card(request: HttpRequest, pk: str) -> HttpResponse:
    invalidate_fragment("dj_card", pk)  # a URL kwarg: a string
    return HttpResponse(status=204)


def form(request: HttpRequest) -> HttpResponse:
    return render_to_response(request, "form.jinja", using=ENGINE)


urlpatterns = [
    path("dj/card/<int:pk>/", card, name="dj-card"),
    path("dj/card/<str:pk>/save/", save_card),
    path("dj/form/", form),
]


@pytest.fixture(autouse=True)
def django_jinja_engine(settings: Any) -> None:
    """A django-jinja backend beside the test settings' engines, with its own
    default ``{% %}`` delimiters and extensions, and our environment."""
    settings.TEMPLATES = [
        *settings.TEMPLATES,
        {
            "BACKEND": "django_jinja.backend.Jinja2",
            "NAME": ENGINE,
            "APP_DIRS": False,
            "OPTIONS": {
                "environment": "django_bridge.jinja2.environment",
                "loader": jinja2.DictLoader(TEMPLATES),
                "match_extension": ".jinja",
            },
        },
    ]
    RENDERS.clear()


@pytest.fixture
def render(cache_settings: str) -> Render:
    from django_jinja.backend import Template

    def render(source: str, **context: Any) -> str:
        template = engines[ENGINE].from_string(source)
        assert isinstance(template, Template)
        output = str(template.render(context))
        assert not PLACEHOLDER.search(output), f"a placeholder leaked: {output!r}"
        return output

    return render


def test_our_tags_sit_beside_django_jinjas_own(cache_settings: str) -> None:
    extensions = set(engines[ENGINE].env.extensions)  # type: ignore[attr-defined]
    assert "jinja_fragcache.ext.FragmentCacheExtension" in extensions
    assert "django_jinja.builtins.extensions.CacheExtension" in extensions
    source = (
        "{% cache 300 theirs %}a{% endcache %}"
        "{% cache_fragment 300 ours %}b{% endcache_fragment %}"
    )
    assert engines[ENGINE].from_string(source).render({}) == "ab"
    assert get_cache_stats()["fragments"]["ours"]["misses"] == 1


@pytest.mark.urls(__name__)
def test_a_view_hits_misses_varies_and_is_invalidated(cache_settings: str) -> None:
    client = Client()
    first = client.get("/dj/card/1/").content.decode()
    assert first == "card 1 (/dj/card/1/) render 1"
    assert client.get("/dj/card/1/").content.decode() == first  # a hit
    assert client.get("/dj/card/2/").content.decode() == (
        "card 2 (/dj/card/2/) render 1"  # another variant
    )
    figures = get_cache_stats()["fragments"]["dj_card"]
    assert (figures["hits"], figures["misses"]) == (1, 2)

    assert client.post("/dj/card/1/save/").status_code == 204
    assert client.get("/dj/card/1/").content.decode().endswith("render 2")
    assert client.get("/dj/card/2/").content.decode().endswith("render 1")
    assert invalidate_tags("dj-cards")
    assert client.get("/dj/card/2/").content.decode().endswith("render 2")
    assert RENDERS == {"1": 2, "2": 2}


@pytest.mark.urls(__name__)
def test_a_shared_fragment_with_django_jinjas_csrf_token(cache_settings: str) -> None:
    alice, bob = Client(), Client()
    alices = page_token(alice.get("/dj/form/"))
    bobs = page_token(bob.get("/dj/form/"))  # a hit
    assert get_cache_stats()["fragments"]["dj_form"]["hits"] == 1
    assert valid_for(bob, bobs) and not valid_for(bob, alices)
    assert valid_for(alice, alices)
