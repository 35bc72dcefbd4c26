"""A real server, real HTTP: the second If-None-Match request gets a 304."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from .support import gunicorn


@pytest.fixture
def server() -> Iterator[str]:
    env = {"DJANGO_SETTINGS_MODULE": "tests.django_settings"}
    with gunicorn("tests.djangoapp.wsgi:application", env, "/articles/1/") as base:
        yield base


def test_second_request_with_if_none_match_gets_304(server: str) -> None:
    with urllib.request.urlopen(server + "/articles/7/", timeout=5) as first:
        assert first.status == 200
        etag = first.headers["ETag"]
        assert first.read() == b"article 7"
    assert etag == '"article-7-v1"'
    request = urllib.request.Request(
        server + "/articles/7/", headers={"If-None-Match": etag}
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 304
    assert info.value.headers["ETag"] == etag
    assert info.value.read() == b""
