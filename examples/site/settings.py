"""The example site: SQLite, the in-process cache (Redis with REDIS_URL)."""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECRET_KEY = "example-site-only"
DEBUG = True
ALLOWED_HOSTS = ["*"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_bridge",
    "examples.site.shop",
]
MIDDLEWARE = [
    # Outermost: it sees every lookup, and adds its panel after the views
    # and their caches are done with the response.
    "examples.site.shop.panel.FragmentPanelMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "examples.site.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_DB", str(HERE / "db.sqlite3")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
if os.environ.get("REDIS_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": os.environ["REDIS_URL"],
            # A frozen Redis must cost half a second, not the whole outage
            # (system check fragcache.W002).
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ]
        },
    },
    {
        "BACKEND": "django.template.backends.jinja2.Jinja2",
        "DIRS": [HERE / "jinja2"],
        "OPTIONS": {
            "environment": "django_bridge.jinja2.environment",
            "block_start_string": "<%",
            "block_end_string": "%>",
        },
    },
]
FRAGCACHE = {"TENANT_RESOLVER": "examples.site.shop.views.tenant_of"}
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "index"
# The stylesheet; runserver, and urls.py with DEBUG under gunicorn, serve it.
STATIC_URL = "/static/"
SILENCED_SYSTEM_CHECKS = ["fragcache.W001"]  # one process: LocMem is fine here
