"""The example site's 15 views, each showing one way to cache."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views import View
from rest_framework import generics, serializers
from rest_framework.decorators import api_view
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response

from django_bridge import invalidate_fragment, invalidate_tags
from django_bridge.conditional import condition_support, last_modified_support
from django_bridge.views import (
    cache_api_list,
    cache_api_response,
    cache_view,
    cache_view_per_tenant,
    cache_view_per_user,
)
from django_bridge.warming import warm_cache_batch, warm_url

from .models import Entry, Tenant

#: The views, in the order the index lists them, with what each shows.
EXAMPLES = [
    ("/home/", "Homepage cached for everyone (cache_view)"),
    ("/dashboard/", "Per-user dashboard (cache_view_per_user)"),
    ("/reports/", "Per-tenant reports (cache_view_per_tenant)"),
    ("/api/products/", "DRF response varying on Accept-Language (cache_api_response)"),
    ("/api/entries/", "Paginated list API (cache_api_list)"),
    ("/etag/1/", "ETag with 304 (condition_support)"),
    ("/last-modified/", "Last-Modified with 304 (last_modified_support)"),
    ("/class-based/", "A class-based view (cache_view on a View)"),
    ("/entries/", "Invalidation when data changes: add an entry, the list refreshes"),
    ("/warm/", "Batch warming (warm_cache_batch, warm_url)"),
    ("/cards/", "A collection of cached cards (cache_each)"),
    ("/nested/", "Nested fragments, invalidating the inner one"),
    ("/conditional/", "Conditional caching: staff against regular users"),
    ("/tags/", "Tag invalidation"),
    ("/cache/", "The stats page (staff only)"),
]
TEMPLATE_EXAMPLES = [
    "sidebar",
    "profile",
    "tenant_menu",
    "data_table",
    "chart",
    "nested",
    "conditional",
    "invalidation",
    "debug_keys",
    "best_practices",
]


def tenant_of(request: HttpRequest) -> str | None:
    """FRAGCACHE["TENANT_RESOLVER"]: the tenant of the logged-in user."""
    membership = (
        getattr(request.user, "membership", None)
        if request.user.is_authenticated
        else None
    )
    return membership.tenant.slug if membership else None


def _entries(request: HttpRequest) -> Any:
    slug = tenant_of(request)
    return Entry.objects.filter(tenant__slug=slug) if slug else Entry.objects.all()


def _tenant_context(request: HttpRequest) -> dict[str, Any]:
    """The context of every template example: ``tenant``, which their
    fragments vary on, and the ``entries`` it decides.

    Every view that renders one of those templates takes both from here: a
    view passing other entries under the same tenant would fill the same
    cache entry with another body, and each page would show the other's.
    """
    return {
        "entries": list(_entries(request)),
        "tenant": tenant_of(request) or "public",
    }


def index(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "shop/index.html",
        {"examples": EXAMPLES, "templates": TEMPLATE_EXAMPLES},
    )


def template_example(request: HttpRequest, name: str) -> HttpResponse:
    """Any of the 10 template examples, in DTL (default) or Jinja2 (?engine=jinja)."""
    if name not in TEMPLATE_EXAMPLES:
        return HttpResponse("no such example", status=404)
    suffix = "jinja" if request.GET.get("engine") == "jinja" else "html"
    context = {**_tenant_context(request), "page": int(request.GET.get("page", 1))}
    return render(request, f"shop/{name}.{suffix}", context)


@cache_view(60)
def home(request: HttpRequest) -> HttpResponse:
    # Its own template and fragment: the sidebar example's "public" variant
    # lists every entry, this page the first five.
    return render(request, "shop/home.html", {"entries": list(Entry.objects.all()[:5])})


@cache_view_per_user(60)
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "shop/profile.jinja", _tenant_context(request))


@cache_view_per_tenant(300)
def reports(request: HttpRequest) -> HttpResponse:
    return render(request, "shop/tenant_menu.html", _tenant_context(request))


class EntrySerializer(serializers.ModelSerializer[Entry]):
    class Meta:
        model = Entry
        fields = ["id", "title", "price"]


@cache_api_response(60, vary_on=["Accept-Language"])
@api_view(["GET"])
def api_products(request: Request) -> Response:
    language = request.headers.get("Accept-Language", "en")[:2]
    titles = {"fr": "Produits", "de": "Produkte"}
    return Response(
        {"title": titles.get(language, "Products"), "count": Entry.objects.count()}
    )


class TenPerPage(PageNumberPagination):
    page_size = 10


@cache_api_list(60)
class EntryList(generics.ListAPIView[Entry]):
    serializer_class = EntrySerializer
    pagination_class = TenPerPage
    queryset = Entry.objects.all()


def _entry_etag(request: HttpRequest, pk: int) -> str | None:
    entry = Entry.objects.filter(pk=pk).only("updated").first()
    return f"entry-{pk}-{entry.updated.timestamp()}" if entry else None


@condition_support(etag_func=_entry_etag)
def etag(request: HttpRequest, pk: int) -> HttpResponse:
    entry = get_object_or_404(Entry, pk=pk)
    return _message(
        request,
        "ETag",
        "Reload: the browser sends If-None-Match and gets a 304 until the entry"
        " changes.",
        f"{entry.title}: {entry.price} EUR",
    )


def _latest_change(request: HttpRequest) -> Any:
    latest = Entry.objects.order_by("-updated").first()
    return latest.updated if latest else None


@last_modified_support(_latest_change)
def last_modified(request: HttpRequest) -> HttpResponse:
    return _message(
        request,
        "Last-Modified",
        "Reload: If-Modified-Since gets a 304 until an entry is saved.",
        f"{Entry.objects.count()} entries",
    )


@cache_view(60)
class ClassBased(View):
    def get(self, request: HttpRequest) -> HttpResponse:
        return _message(
            request,
            "Class-based view",
            "cache_view on a View class caches its dispatch.",
            f"class-based: {Entry.objects.count()} entries",
        )


def _message(request: HttpRequest, title: str, lead: str, message: str) -> HttpResponse:
    return render(
        request, "shop/message.html", {"title": title, "lead": lead, "message": message}
    )


def _change_data(request: HttpRequest) -> Entry:
    """The "Change the data" button: the visitor's first entry costs one
    more.  Saving it clears its tags (``invalidate_on_save``), after the
    commit."""
    entry = _entries(request).first()
    entry.price += 1
    entry.save()
    return entry


def _to_panel(name: str) -> HttpResponse:
    # After a change, the page lands on its panel: what re-rendered, what
    # was kept.
    return redirect(reverse(name) + "#fragment-panel")


def entries(request: HttpRequest) -> HttpResponse:
    """GET: a cached, tagged list. POST: add an entry, or change one;
    invalidate_on_save clears the tag after the commit, and the list
    refreshes."""
    if request.method == "POST" and "change" in request.POST:
        _change_data(request)
        return _to_panel("entries")
    if request.method == "POST":
        tenant = Tenant.objects.get(slug=tenant_of(request) or "acme")
        Entry.objects.create(
            tenant=tenant,
            title=request.POST["title"],
            price=int(request.POST.get("price", 0)),
        )
        return redirect("entries")
    return render(request, "shop/invalidation.html", _tenant_context(request))


def warm(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return render(request, "shop/warm.html", {"report": None})
    report = warm_cache_batch(
        [{"key": "entry-count", "data_func": Entry.objects.count, "timeout": 300}]
    )
    warm_url("/")
    return render(request, "shop/warm.html", {"report": report})


def cards(request: HttpRequest) -> HttpResponse:
    return render(
        request, "shop/data_table.jinja", {**_tenant_context(request), "page": 1}
    )


def nested(request: HttpRequest) -> HttpResponse:
    """POST (the "Change the data" button): a new price, and its ``price``
    fragment invalidated; the list around it re-renders, the other prices
    are kept.  Nothing here is tagged, so saving alone would not show."""
    if request.method == "POST":
        invalidate_fragment("price", _change_data(request).pk)
        return _to_panel("nested")
    return render(request, "shop/nested.html", _tenant_context(request))


def nested_invalidate(request: HttpRequest, pk: int) -> HttpResponse:
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    invalidate_fragment("price", pk)  # the outer list re-renders, the others stay
    return redirect("nested")


def conditional(request: HttpRequest) -> HttpResponse:
    return render(request, "shop/conditional.jinja", _tenant_context(request))


def tags(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        if "change" in request.POST:
            _change_data(request)  # clears the tag too, after the commit
        else:
            invalidate_tags("entries")
        return _to_panel("tags")
    return render(request, "shop/best_practices.html", _tenant_context(request))
