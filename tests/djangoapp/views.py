"""Views for the cached-view tests; each counts how often it really ran."""

from __future__ import annotations

from collections import Counter

from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    StreamingHttpResponse,
)
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.vary import vary_on_headers

from django_bridge.views import cache_view, cache_view_per_tenant, cache_view_per_user

runs: Counter[str] = Counter()


@cache_view(300)
def home(request: HttpRequest) -> HttpResponse:
    runs["home"] += 1
    return HttpResponse(f"home {runs['home']} {request.GET.urlencode()}")


@cache_view(300, query_params=["page"])
def listing(request: HttpRequest) -> HttpResponse:
    runs["listing"] += 1
    return HttpResponse(f"listing {runs['listing']}")


@cache_view(300)
@vary_on_headers("Accept-Language")
def localized(request: HttpRequest) -> HttpResponse:
    runs["localized"] += 1
    return HttpResponse(
        f"{request.headers.get('Accept-Language', '-')} {runs['localized']}"
    )


@cache_view(300)
def greeting(request: HttpRequest) -> HttpResponse:
    runs["greeting"] += 1
    name = request.user.username if request.user.is_authenticated else "stranger"
    return HttpResponse(f"hello {name} {runs['greeting']}")


@cache_view_per_user(300)
def dashboard(request: HttpRequest) -> HttpResponse:
    runs["dashboard"] += 1
    name = request.user.username if request.user.is_authenticated else "anonymous"
    return HttpResponse(f"dashboard of {name} {runs['dashboard']}")


@cache_view_per_tenant(300)
def reports(request: HttpRequest) -> HttpResponse:
    runs["reports"] += 1
    return HttpResponse(f"reports {runs['reports']}")


@cache_view(300)
def refused(request: HttpRequest, kind: str) -> HttpResponseBase:
    runs[kind] += 1
    if kind == "streaming":
        return StreamingHttpResponse(iter([b"a", b"b"]))
    response = HttpResponse(
        f"{kind} {runs[kind]}", status=404 if kind == "404" else 200
    )
    if kind == "cookie":
        response.set_cookie("session", "secret")
    elif kind in ("private", "no-store", "no-cache"):
        response["Cache-Control"] = kind
    elif kind == "vary-star":
        response["Vary"] = "*"
    return response


@cache_view(300)
async def async_home(request: HttpRequest) -> HttpResponse:
    runs["async"] += 1
    return HttpResponse(f"async {runs['async']}")


@cache_view(300)
class ClassHome(View):
    def get(self, request: HttpRequest) -> HttpResponse:
        runs["class"] += 1
        return HttpResponse(f"class {runs['class']}")


class MethodHome(View):
    @method_decorator(cache_view(300))
    def get(self, request: HttpRequest) -> HttpResponse:
        runs["method"] += 1
        return HttpResponse(f"method {runs['method']}")


@cache_view(300)
@vary_on_headers("Authorization")
def token_page(request: HttpRequest) -> HttpResponse:
    runs["token"] += 1
    return HttpResponse(
        f"for {request.headers.get('Authorization', '-')} {runs['token']}"
    )


@cache_view(300, include_host=True)
def per_host(request: HttpRequest) -> HttpResponse:
    runs["host"] += 1
    return HttpResponse(f"{request.get_host()} {runs['host']}")


@cache_view(300)
def visitor(request: HttpRequest) -> HttpResponse:
    # Numbers each new visitor in their session: a response per visitor.
    if "visitor" not in request.session:
        runs["visitor"] += 1
        request.session["visitor"] = runs["visitor"]
    return HttpResponse(f"visitor {request.session['visitor']}")


FORM_PAGE = (
    '<meta name="csrf-token" content="{{ csrf_token }}"><form>{% csrf_token %}</form>'
)


def _form_page(request: HttpRequest) -> HttpResponse:
    from django.template import engines

    runs["form"] += 1
    return HttpResponse(engines["django"].from_string(FORM_PAGE).render({}, request))


shared_form = cache_view(300, key_prefix="shared-form")(_form_page)
user_form = cache_view_per_user(300, key_prefix="user-form")(_form_page)
tenant_form = cache_view_per_tenant(300, key_prefix="tenant-form")(_form_page)


@cache_view(300)
@vary_on_headers("Accept-Language")
async def async_localized(request: HttpRequest) -> HttpResponse:
    runs["async-localized"] += 1
    return HttpResponse(
        f"{request.headers.get('Accept-Language', '-')} {runs['async-localized']}"
    )


@cache_view(300)
@vary_on_headers("Accept-Language")
def private_localized(request: HttpRequest) -> HttpResponse:
    # Learning the Vary header must not store what is refused anyway.
    runs["private-localized"] += 1
    response = HttpResponse(f"private {runs['private-localized']}")
    response["Cache-Control"] = "private"
    return response
