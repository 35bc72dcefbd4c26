"""Pages for the CDN tests: overlapping fragments, a cached view, and pages
that vary per visitor.  Every page says how often its view ran, and every
fragment body how many fragment bodies had rendered before it in this
process, so a test sees what was rendered anew and what was served."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.template import engines
from django.urls import path

from django_bridge.views import cache_view

runs: Counter[str] = Counter()
_ticks = itertools.count(1)

#: Page b is Jinja2: the middleware sees both engines' fragments.
PAGE_B = (
    "page b, run {{ run }}\n"
    '<% cache_fragment 300 menu tags="nav" %>menu {{ tick() }}<% endcache_fragment %>\n'
    '<% cache_fragment 300 card 2 tags="products" %>card 2, {{ tick() }}<% endcache_fragment %>\n'
)


def _context(page: str) -> dict[str, object]:
    runs[page] += 1
    return {"run": runs[page], "tick": lambda: next(_ticks)}


def page(request: HttpRequest, name: str) -> HttpResponse:
    if name == "b":
        source = engines["jinja2"].from_string(PAGE_B)
        return HttpResponse(source.render(_context("b"), request))
    return render(request, f"cdn/{name}.html", _context(name))


@cache_view(300)
def cached(request: HttpRequest) -> HttpResponse:
    return render(request, "cdn/view.html", _context("view"))


def many(request: HttpRequest) -> HttpResponse:
    context = _context("many")
    context["items"] = range(int(request.GET.get("n", "3")))
    return render(request, "cdn/many.html", context)


def tagged(request: HttpRequest) -> HttpResponse:
    context = _context("tagged")
    context["tags"] = [f"tag-{i}" for i in range(int(request.GET.get("n", "3")))]
    return render(request, "cdn/tagged.html", context)


def cookie(request: HttpRequest) -> HttpResponse:
    response = render(request, "cdn/plain.html", _context("cookie"))
    response.set_cookie("flavour", "oat")
    return response


def session(request: HttpRequest) -> HttpResponse:
    request.session.get("seen")
    return render(request, "cdn/plain.html", _context("session"))


def user(request: HttpRequest) -> HttpResponse:
    # Reads nothing of the user: logged in is enough to keep it private.
    return render(request, "cdn/plain.html", _context("user"))


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def body() -> Iterator[bytes]:
        yield render(request, "cdn/plain.html", _context("stream")).content

    return StreamingHttpResponse(body())


urlpatterns = [
    path("view/", cached, name="cdn-view"),
    path("many/", many),
    path("tagged/", tagged),
    path("cookie/", cookie),
    path("session/", session),
    path("user/", user),
    path("stream/", stream),
    path("<str:name>/", page),
]
