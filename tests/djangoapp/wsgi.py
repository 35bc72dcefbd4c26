"""WSGI entry point for the end-to-end test's real server."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_settings")
application = get_wsgi_application()
