from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path


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
