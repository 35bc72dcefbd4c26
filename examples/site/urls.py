from __future__ import annotations

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path

from django_bridge import metrics_view

from .shop import views

urlpatterns = [
    path("", views.index, name="index"),
    path("home/", views.home, name="home"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("reports/", views.reports, name="reports"),
    path("api/products/", views.api_products, name="api-products"),
    path("api/entries/", views.EntryList.as_view(), name="api-entries"),
    path("etag/<int:pk>/", views.etag, name="etag"),
    path("last-modified/", views.last_modified, name="last-modified"),
    path("class-based/", views.ClassBased.as_view(), name="class-based"),
    path("entries/", views.entries, name="entries"),
    path("warm/", views.warm, name="warm"),
    path("cards/", views.cards, name="cards"),
    path("nested/", views.nested, name="nested"),
    path(
        "nested/<int:pk>/invalidate/", views.nested_invalidate, name="nested-invalidate"
    ),
    path("conditional/", views.conditional, name="conditional"),
    path("tags/", views.tags, name="tags"),
    path("templates/<str:name>/", views.template_example, name="template-example"),
    path("cache/", include("django_bridge.urls")),
    path("metrics", metrics_view, name="metrics"),  # Prometheus
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="shop/login.html"),
        name="login",
    ),
]
if settings.DEBUG:  # the stylesheet, under gunicorn too
    urlpatterns += staticfiles_urlpatterns()
