"""A test-only middleware: no response of the suite may hold a placeholder
(a hole or a live ``{% nocache %}`` marker)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase

from ..support import PLACEHOLDER


class NoPlaceholders:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        content = getattr(response, "content", b"")
        text = content.decode("utf-8", "replace")
        assert not PLACEHOLDER.search(text), f"a placeholder leaked: {text[:300]!r}"
        return response
