from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path

from django_bridge.conditional import condition_support


def dtl_page(request: HttpRequest) -> HttpResponse:
    return render(request, "card.html", {"pk": request.GET.get("pk", "1")})


async def async_jinja_page(request: HttpRequest) -> HttpResponse:
    return render(request, "card.jinja", {"pk": request.GET.get("pk", "1")})


async def async_dtl_page(request: HttpRequest) -> HttpResponse:
    return render(request, "card.html", {"pk": request.GET.get("pk", "1")})


urlpatterns = [
    path("dtl/", dtl_page),
    path("async/jinja/", async_jinja_page),
    path("async/dtl/", async_dtl_page),
]


FORMS = {
    "dtl": "{% load cache_tags %}{% cache_fragment 300 form VARY %}<form>{% csrf_token %}</form>{% endcache_fragment %}",
    "jinja2": "<% cache_fragment 300 form VARY %><form>{{ csrf_input }}</form><% endcache_fragment %>",
    "jinja2-raw": "<% cache_fragment 300 form VARY %><script>token='{{ csrf_token }}'</script><% endcache_fragment %>",
    "meta": '{% load cache_tags %}{% cache_fragment 300 form VARY %}<meta name="csrf-token" content="{{ csrf_token }}">{% endcache_fragment %}',
    # The token hole and a {% nocache %} hole in one shared fragment.
    "dtl-hole": "{% load cache_tags %}{% cache_fragment 300 form VARY %}<form>{% csrf_token %}Hi {% nocache %}{{ request.GET.who }}{% endnocache %}</form>{% endcache_fragment %}",
    "jinja2-hole": "<% cache_fragment 300 form VARY %><form>{{ csrf_input }}Hi <% nocache %>{{ request.GET.who }}<% endnocache %></form><% endcache_fragment %>",
}


def form_page(request: HttpRequest, engine: str) -> HttpResponse:
    from django.template import engines

    vary = request.GET.get("vary", "")
    source = FORMS[engine].replace("VARY", vary)
    backend = engines["jinja2" if engine.startswith("jinja2") else "django"]
    return HttpResponse(backend.from_string(source).render({}, request))


urlpatterns.append(path("form/<str:engine>/", form_page))


def _article_etag(request: HttpRequest, pk: int) -> str:
    return f"article-{pk}-v1"


def _article(request: HttpRequest, pk: int) -> HttpResponse:
    return HttpResponse(f"article {pk}")


urlpatterns.append(
    path("articles/<int:pk>/", condition_support(etag_func=_article_etag)(_article))
)


from . import views  # noqa: E402

urlpatterns += [
    path("home/", views.home, name="home"),
    path("listing/", views.listing, name="listing"),
    path("localized/", views.localized, name="localized"),
    path("greeting/", views.greeting, name="greeting"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("reports/", views.reports, name="reports"),
    path("refused/<str:kind>/", views.refused, name="refused"),
    path("async-home/", views.async_home, name="async-home"),
    path("class-home/", views.ClassHome.as_view(), name="class-home"),
    path("method-home/", views.MethodHome.as_view(), name="method-home"),
    path("unnamed/", views.home),
    path("unnamed/again/", views.home),
]


from . import api  # noqa: E402

urlpatterns += [
    path("api/products/", api.products, name="api-products"),
    path("api/items/", api.ItemList.as_view(), name="api-items"),
]

urlpatterns += [
    path("token/", views.token_page, name="token"),
    path("per-host/", views.per_host, name="per-host"),
    path("visitor/", views.visitor, name="visitor"),
    path("shared-form/", views.shared_form),
    path("user-form/", views.user_form),
    path("tenant-form/", views.tenant_form),
]

from django.urls import include  # noqa: E402

urlpatterns += [path("cache/", include("django_bridge.urls"))]

urlpatterns += [
    path("async-localized/", views.async_localized, name="async-localized"),
    path("private-localized/", views.private_localized, name="private-localized"),
]

urlpatterns += [path("cdn/", include("tests.djangoapp.cdn"))]
