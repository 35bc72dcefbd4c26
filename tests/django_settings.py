"""Django settings for the bridge's tests (pytest-django)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
SECRET_KEY = "tests-only"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["testserver", "a.example", "b.example"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "rest_framework",
    "django_bridge",
    "tests.djangoapp",
    "examples.site.shop",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
}
MIDDLEWARE = [
    "tests.djangoapp.placeholders.NoPlaceholders",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "tests.djangoapp.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [HERE / "templates" / "dtl"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": ["django.template.context_processors.request"]
        },
    },
    {
        "BACKEND": "django.template.backends.jinja2.Jinja2",
        "DIRS": [
            HERE / "templates" / "jinja2",
            HERE.parent / "examples" / "site" / "jinja2",
        ],
        "OPTIONS": {
            "environment": "django_bridge.jinja2.environment",
            "block_start_string": "<%",
            "block_end_string": "%>",
        },
    },
]
SILENCED_SYSTEM_CHECKS = ["fragcache.W001"]  # LocMem is right for tests
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
REST_FRAMEWORK = {"UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser"}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast tests
