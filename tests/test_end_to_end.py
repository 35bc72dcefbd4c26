"""A real server, real HTTP: the second If-None-Match request gets a 304."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import free_port


@pytest.fixture
def server() -> Iterator[str]:
    gunicorn = shutil.which("gunicorn") or str(
        Path(sys.executable).with_name("gunicorn")
    )
    if not Path(gunicorn).exists():
        pytest.fail('The end-to-end test needs gunicorn: pip install -e ".[test]"')
    port = free_port()
    root = Path(__file__).parent.parent
    process = subprocess.Popen(
        [
            gunicorn,
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "tests.djangoapp.wsgi:application",
        ],
        cwd=root,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.django_settings",
            "PYTHONPATH": str(root),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(base + "/articles/1/", timeout=1).close()
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"gunicorn did not start: {process.stderr.read().decode()[-2000:] if process.stderr else ''}"
                    )
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(10)
        if process.stderr:
            process.stderr.close()


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
