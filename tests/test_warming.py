"""Warming: values, URLs as a visitor or a user, scopes, and the command."""

from __future__ import annotations

import uuid
from io import StringIO
from typing import Any

import pytest
from django.core.cache import caches
from django.core.management import CommandError, call_command
from django.test import Client

import django_bridge.warming as warming
from django_bridge.warming import warm_cache, warm_cache_batch, warm_url, warmer
from tests.djangoapp.views import runs


@pytest.fixture(autouse=True)
def fresh(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.FRAGCACHE = {"KEY_PREFIX": "w" + uuid.uuid4().hex[:10]}
    monkeypatch.setattr(warming, "_warmers", {})
    runs.clear()


def test_warm_cache_stores_and_returns() -> None:
    key = "warm-" + uuid.uuid4().hex
    assert warm_cache(key, lambda: {"top": [1, 2]}, 60) == {"top": [1, 2]}
    assert caches["default"].get(key) == {"top": [1, 2]}
    assert warm_cache(key + "x", lambda: 5, 0) == 5
    assert caches["default"].get(key + "x") is None  # 0: not stored
    with pytest.raises(ValueError, match="timeout"):
        warm_cache(key, lambda: 1, -1)


def test_a_failing_spec_never_stops_the_batch() -> None:
    def broken() -> Any:
        raise LookupError("no such product")

    report = warm_cache_batch(
        [
            {"key": "a-" + uuid.uuid4().hex, "data_func": lambda: 1, "timeout": 60},
            {"key": "broken", "data_func": broken, "timeout": 60},
            {"key": "c-" + uuid.uuid4().hex, "data_func": lambda: 3, "timeout": None},
        ]
    )
    assert [r.ok for r in report.results] == [True, False, True]
    assert report.results[1].error == "LookupError: no such product"
    assert (report.warmed, report.failed) == (2, 1)
    assert all(r.seconds >= 0 for r in report.results)


def test_warm_url_fills_the_view_cache() -> None:
    assert warm_url("/home/") == 200
    assert Client().get("/home/")["X-Cache"] == "HIT"
    assert runs["home"] == 1
    with pytest.raises(RuntimeError, match="404"):
        warm_url("/no-such-page/")


@pytest.mark.django_db
def test_warm_url_as_a_user() -> None:
    from django.contrib.auth.models import User

    ann = User.objects.create_user("ann")
    warm_url("/dashboard/", user=ann)
    client = Client()
    client.force_login(ann)
    assert client.get("/dashboard/").content == b"dashboard of ann 1"


def test_the_command_runs_scopes_and_urls_and_sums_up() -> None:
    @warmer("homepage")
    def homepage() -> Any:
        yield "/home/"
        yield {"key": "k-" + uuid.uuid4().hex, "data_func": lambda: 1, "timeout": 60}

    @warmer("other")
    def other() -> Any:
        yield "/listing/"

    out = StringIO()
    call_command("warm_cache", "--scope", "homepage", "--url", "/greeting/", stdout=out)
    assert "warmed 3, failed 0" in out.getvalue()
    assert (runs["home"], runs["listing"], runs["greeting"]) == (1, 0, 1)
    call_command("warm_cache", stdout=out)  # all scopes
    assert runs["listing"] == 1


def test_the_command_logs_failures_goes_on_and_exits_non_zero(
    caplog: pytest.LogCaptureFixture,
) -> None:
    err = StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command(
            "warm_cache",
            "--url",
            "/missing/",
            "--url",
            "/home/",
            "--no-progress",
            stderr=err,
            stdout=StringIO(),
        )
    assert exit_info.value.code == 1
    assert runs["home"] == 1  # the failure did not stop the rest
    assert "/missing/: RuntimeError: /missing/ answered 404" in err.getvalue()
    assert "warming /missing/ failed" in caplog.text


def test_unknown_scopes_and_bad_options_are_clear_errors() -> None:
    with pytest.raises(CommandError, match="unknown warming scope"):
        call_command("warm_cache", "--scope", "nope")
    with pytest.raises(CommandError, match="concurrency"):
        call_command("warm_cache", "--concurrency", "0")


def test_concurrency() -> None:
    out = StringIO()
    urls = [arg for i in range(6) for arg in ("--url", f"/home/?n={i}")]
    call_command(
        "warm_cache", *urls, "--concurrency", "4", stdout=out, stderr=StringIO()
    )
    assert "warmed 6, failed 0" in out.getvalue()
    assert runs["home"] == 6


@pytest.mark.django_db
def test_per_user_scope_warms_the_most_recently_active_users() -> None:
    from datetime import timedelta

    from django.contrib.auth.models import User
    from django.utils import timezone

    now = timezone.now()
    for i, name in enumerate(["old", "mid", "new", "never"]):
        User.objects.create_user(
            name, last_login=None if name == "never" else now - timedelta(days=10 - i)
        )

    @warmer("users", per_user=True)
    def dashboards(user: Any) -> Any:
        yield ("/dashboard/", user)

    out = StringIO()
    call_command(
        "warm_cache",
        "--scope",
        "users",
        "--user-limit",
        "2",
        stdout=out,
        stderr=StringIO(),
    )
    assert "warmed 2, failed 0" in out.getvalue()
    new = Client()
    new.force_login(User.objects.get(username="new"))
    assert new.get("/dashboard/")["X-Cache"] == "HIT"
    old = Client()
    old.force_login(User.objects.get(username="old"))
    assert old.get("/dashboard/")["X-Cache"] == "MISS"
