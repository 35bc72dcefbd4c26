"""The staff-only stats page and its server-side SVG chart."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from django.test import Client

from django_bridge.stats import publish
from tests.djangoapp.views import runs


@pytest.fixture(autouse=True)
def fresh(settings: Any) -> None:
    settings.FRAGCACHE = {"KEY_PREFIX": "sp" + uuid.uuid4().hex[:10]}
    runs.clear()


@pytest.fixture
def staff(db: Any) -> Client:
    from django.contrib.auth.models import User

    client = Client()
    client.force_login(User.objects.create_user("boss", is_staff=True))
    return client


def test_only_staff_see_it(db: Any) -> None:
    from django.contrib.auth.models import User

    anonymous = Client().get("/cache/")
    assert anonymous.status_code == 302 and "login" in anonymous["Location"]
    member = Client()
    member.force_login(User.objects.create_user("ann"))
    assert member.get("/cache/").status_code == 403


def test_figures_table_and_chart(staff: Client) -> None:
    publish(
        "worker-1",
        {
            "sidebar": {
                "hits": 3,
                "misses": 1,
                "renders": 1,
                "fetches": 4,
                "render_seconds": 0.0001,
                "fetch_seconds": 0.004,
            },
            "view:home": {
                "hits": 1,
                "misses": 1,
                "renders": 1,
                "fetches": 2,
                "render_seconds": 0.5,
                "fetch_seconds": 0.002,
            },
        },
    )
    page = staff.get("/cache/")
    assert page.status_code == 200
    html = page.content.decode()
    assert re.search(r"Hit rate <strong>66\.7%</strong>\s*\(4 hits, 2 misses\)", html)
    assert "keys n/a" in html  # LocMem cannot say
    rows = re.findall(r"<tr>\s*<td>([^<]+)</td><td class=\"kind\">(\w+)</td>", html)
    assert rows == [("sidebar", "fragment"), ("home", "view")]
    assert html.count("cheaper to render than to fetch") == 1  # the sidebar
    bars = re.findall(r'<rect class="bar" x="220" y="0" width="([\d.]+)"', html)
    assert bars == ["270.0", "180.0"]  # 75 % and 50 % of 360
    assert "<script" not in html and "http" not in html.split("<body>")[1]  # no CDN
