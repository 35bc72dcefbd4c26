"""CDN cache tags: the surrogate-key middleware, purges after invalidations,
and a real Varnish in front of a real gunicorn."""

from __future__ import annotations

import logging
import os
import random
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.checks import run_checks
from django.test import AsyncClient, Client

from django_bridge import (
    conf,
    get_cache_stats,
    get_fragment_cache,
    invalidate_fragment,
    invalidate_fragments,
    invalidate_tags,
)
from django_bridge import purge as purges
from django_bridge.signals import surrogate_keys_invalidated
from django_bridge.views import invalidate_view_cache
from jinja_fragcache.keys import (
    make_fragment_key,
    name_version_key,
    tag_version_key,
    variant_version_key,
)
from jinja_fragcache.surrogates import folded_key, purge_keys, surrogate_key

from .djangoapp import cdn
from .djangoapp.cdn_settings import SURROGATE_KEY_MIDDLEWARE, fragcache, shared_caches
from .support import ROOT, started

EXAMPLE_VCL = ROOT / "examples" / "varnish" / "default.vcl"


@pytest.fixture
def edge(settings: Any, unique_prefix: str) -> str:
    """The middleware on, with xkey headers; the key prefix of this test."""
    settings.MIDDLEWARE = [SURROGATE_KEY_MIDDLEWARE, *settings.MIDDLEWARE]
    settings.FRAGCACHE = fragcache(unique_prefix)
    return unique_prefix


def fragment_keys(
    prefix: str, name: str, *vary: object, tags: tuple[str, ...] = ()
) -> set[str]:
    """The keys a page holding fragment *name* (these vary values and tags)
    must list: its variant's, its name's and its tags'."""
    counters = [
        variant_version_key(make_fragment_key(name, vary, prefix=prefix)),
        name_version_key(name, prefix=prefix),
        *(tag_version_key(tag, prefix=prefix) for tag in tags),
    ]
    return {surrogate_key(c) for c in counters}


def listed(response: Any) -> set[str]:
    assert "private" not in response.get("Cache-Control", "")
    return set(response["xkey"].split())


def is_private(response: Any) -> bool:
    return "private" in response.get("Cache-Control", "") and "xkey" not in response


# -- the middleware ---------------------------------------------------------------


@pytest.mark.django_db
def test_every_fragment_is_listed_on_a_miss_and_on_a_hit(edge: str) -> None:
    expected = (
        fragment_keys(edge, "box")
        | fragment_keys(edge, "card", 1, tags=("products",))
        | fragment_keys(edge, "promo", tags=("offers",))
    )
    client = Client()
    miss = client.get("/cdn/c/")
    hit = client.get("/cdn/c/")

    assert listed(miss) == expected
    # The box was a hit: the card inside it was never looked up, and is
    # listed all the same, from the box's entry.
    assert listed(hit) == expected
    assert miss.content.split(b"\n")[1:] == hit.content.split(b"\n")[1:]


@pytest.mark.django_db
def test_jinja2_fragments_are_listed_too(edge: str) -> None:
    expected = fragment_keys(edge, "menu", tags=("nav",)) | fragment_keys(
        edge, "card", 2, tags=("products",)
    )
    client = Client()
    assert listed(client.get("/cdn/b/")) == expected
    assert listed(client.get("/cdn/b/")) == expected


@pytest.mark.django_db
def test_a_cached_view_is_listed_with_the_fragments_inside_it(edge: str) -> None:
    client = Client()
    miss = client.get("/cdn/view/")
    runs = cdn.runs["view"]
    hit = client.get("/cdn/view/")

    assert cdn.runs["view"] == runs  # served by cache_view
    assert listed(hit) == listed(miss)
    view_key = surrogate_key(name_version_key("view:cdn-view", prefix=edge))
    assert listed(hit) >= fragment_keys(edge, "promo", tags=("offers",)) | {view_key}


@pytest.mark.django_db
def test_a_page_without_fragments_gets_no_header(edge: str) -> None:
    response = Client().get("/articles/3/")
    assert "xkey" not in response and "Cache-Control" not in response


@pytest.mark.django_db
def test_without_the_setting_the_middleware_does_nothing(
    edge: str, settings: Any
) -> None:
    settings.FRAGCACHE = {"KEY_PREFIX": edge}
    response = Client().get("/cdn/c/")
    assert "xkey" not in response and "Cache-Control" not in response


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("header", "separator"), [("Surrogate-Key", " "), ("Cache-Tag", ",")]
)
def test_other_cdn_styles(
    edge: str, settings: Any, header: str, separator: str
) -> None:
    settings.FRAGCACHE = {**settings.FRAGCACHE, "SURROGATE_KEYS": {"HEADER": header}}
    response = Client().get("/cdn/a/")
    assert set(response[header].split(separator)) == fragment_keys(
        edge, "menu", tags=("nav",)
    ) | fragment_keys(edge, "card", 1, tags=("products",))


@pytest.mark.django_db
def test_a_form_with_a_csrf_token_stays_private(edge: str) -> None:
    client = Client()
    for _ in range(2):  # a miss, then a hit whose hole gets this visitor's token
        response = client.get("/cdn/form/")
        assert b"csrfmiddlewaretoken" in response.content
        assert is_private(response)


@pytest.mark.django_db
def test_a_csrf_token_is_seen_even_before_its_cookie_is_set(
    edge: str, settings: Any
) -> None:
    # Placed after CsrfViewMiddleware, the middleware sees the response
    # before the CSRF cookie is added: the flag that get_token() set tells.
    stack = [m for m in settings.MIDDLEWARE if m != SURROGATE_KEY_MIDDLEWARE]
    settings.MIDDLEWARE = [*stack, SURROGATE_KEY_MIDDLEWARE]
    response = Client().get("/cdn/plainform/")
    assert b"csrfmiddlewaretoken" in response.content
    assert is_private(response)


@pytest.mark.django_db
def test_a_page_with_a_nocache_hole_stays_private(edge: str) -> None:
    client = Client()
    for run in (1, 2):  # a miss, then a hit whose hole is filled again
        response = client.get("/cdn/nocache/")
        assert f"visitor {cdn.runs['nocache']}!" in response.content.decode()
        assert is_private(response), run


@pytest.mark.django_db
def test_a_page_that_read_the_session_stays_private(edge: str) -> None:
    assert is_private(Client().get("/cdn/session/"))


@pytest.mark.django_db
def test_a_page_for_a_logged_in_user_stays_private(edge: str) -> None:
    from django.contrib.auth.models import User

    anonymous = Client().get("/cdn/user/")
    assert listed(anonymous) == fragment_keys(edge, "plain")
    client = Client()
    client.force_login(User.objects.create_user("alice"))
    assert is_private(client.get("/cdn/user/"))


@pytest.mark.django_db
def test_a_response_that_sets_a_cookie_stays_private(edge: str) -> None:
    response = Client().get("/cdn/cookie/")
    assert response.cookies["flavour"].value == "oat"
    assert is_private(response)


@pytest.mark.django_db
def test_a_streaming_response_stays_private(edge: str) -> None:
    response = Client().get("/cdn/stream/")
    assert b"plain" in b"".join(response.streaming_content)
    assert is_private(response)


@pytest.mark.django_db(transaction=True)
def test_async_requests_are_labelled_too(edge: str) -> None:
    from django.contrib.auth.models import User

    user = User.objects.create_user("bob")

    async def fetch(login: bool) -> Any:
        client = AsyncClient()
        if login:
            await client.aforce_login(user)
        return await client.get("/cdn/c/")

    anonymous = async_to_sync(fetch)(False)
    assert listed(anonymous) >= fragment_keys(edge, "box")
    assert is_private(async_to_sync(fetch)(True))


@pytest.mark.django_db
def test_many_variants_fold_into_one_key_per_name(edge: str) -> None:
    response = Client().get("/cdn/many/?n=600")
    keys = listed(response)
    counter = variant_version_key(make_fragment_key("item", [0], prefix=edge))
    assert keys == {
        str(folded_key(counter)),
        surrogate_key(name_version_key("item", prefix=edge)),
    }
    assert len(response["xkey"]) <= 8000


@pytest.mark.django_db
def test_keys_that_do_not_fit_make_the_page_private_with_a_warning(
    edge: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="django_bridge"):
        response = Client().get("/cdn/tagged/?n=1000")
    assert is_private(response)
    assert "do not fit in a xkey header" in caplog.text
    assert listed(Client().get("/cdn/tagged/?n=10")) >= fragment_keys(edge, "tagged")


# -- settings checks ----------------------------------------------------------------


def problems() -> list[str]:
    return [p.id for p in run_checks() if not p.is_silenced()]


@pytest.mark.parametrize(
    "fragcache_settings",
    [
        {"SURROGATE_KEYS": {"HEADER": "X-Tags"}},
        {"SURROGATE_KEYS": "xkey"},
        {"SURROGATE_KEYS": {"HEADER": "xkey"}, "PURGE": {"BACKEND": "fastly"}},
        {
            "SURROGATE_KEYS": {"HEADER": "xkey"},
            "PURGE": {"BACKEND": "varnish", "URLS": "http://127.0.0.1:6081/"},
        },
        {
            "SURROGATE_KEYS": {"HEADER": "xkey"},
            "PURGE": {"BACKEND": "varnish", "URLS": ["ftp://x/"], "TIMEOUT": 1},
        },
        {
            "SURROGATE_KEYS": {"HEADER": "xkey"},
            "PURGE": {"BACKEND": "varnish", "URLS": ["http://x/"], "TIMEOUT": -1},
        },
        {
            "SURROGATE_KEYS": {"HEADER": "xkey"},
            "PURGE": {"BACKEND": "varnish", "URLS": ["http://x:port/"]},
        },
    ],
)
def test_a_bad_cdn_setting_is_an_error(settings: Any, fragcache_settings: Any) -> None:
    settings.FRAGCACHE = fragcache_settings
    assert problems() == ["fragcache.E003"]


def test_purging_without_surrogate_keys_is_a_warning(settings: Any) -> None:
    settings.FRAGCACHE = {"PURGE": {"BACKEND": "varnish", "URLS": ["http://x/"]}}
    assert problems() == ["fragcache.W003"]
    settings.FRAGCACHE = {
        "PURGE": {"BACKEND": "varnish", "URLS": ["http://x/"]},
        "SURROGATE_KEYS": {"HEADER": "Cache-Tag"},
    }
    assert problems() == ["fragcache.W004"]
    settings.FRAGCACHE = fragcache("p", ["http://127.0.0.1:6081/"])
    assert problems() == []


# -- after an invalidation: the signal and the purger ------------------------------------


@contextmanager
def heard() -> Iterator[list[dict[str, Any]]]:
    """What surrogate_keys_invalidated was sent with, while the block runs."""
    calls: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        kwargs.pop("signal")
        calls.append(kwargs)

    surrogate_keys_invalidated.connect(receiver)
    try:
        yield calls
    finally:
        surrogate_keys_invalidated.disconnect(receiver)


@pytest.mark.parametrize("header", ["xkey", "Surrogate-Key", "Cache-Tag"])
def test_the_signal_names_the_keys_of_each_invalidation(
    settings: Any, unique_prefix: str, header: str
) -> None:
    settings.FRAGCACHE = {
        "KEY_PREFIX": unique_prefix,
        "SURROGATE_KEYS": {"HEADER": header},
    }
    card = variant_version_key(make_fragment_key("card", [1], prefix=unique_prefix))
    cases: list[tuple[Callable[[], bool], list[str]]] = [
        (lambda: invalidate_fragment("card", 1), [card]),
        (
            lambda: invalidate_fragments("card"),
            [name_version_key("card", prefix=unique_prefix)],
        ),
        (
            lambda: invalidate_tags("nav", "offers"),
            [tag_version_key(t, prefix=unique_prefix) for t in ("nav", "offers")],
        ),
        (
            lambda: invalidate_view_cache("cdn-view"),
            [name_version_key("view:cdn-view", prefix=unique_prefix)],
        ),
    ]
    for invalidate, counters in cases:
        with heard() as calls:
            assert invalidate()
        assert calls == [{"keys": purge_keys(counters), "counters": counters}]


def test_a_receiver_that_raises_is_logged_and_the_others_still_hear(
    settings: Any, unique_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings.FRAGCACHE = fragcache(unique_prefix)

    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("the CDN's API is down")

    surrogate_keys_invalidated.connect(broken)
    try:
        with heard() as calls, caplog.at_level(logging.ERROR, logger="django_bridge"):
            assert invalidate_tags("nav")
    finally:
        surrogate_keys_invalidated.disconnect(broken)
    assert len(calls) == 1
    assert "the CDN's API is down" in caplog.text


def test_the_signal_comes_only_once_the_bump_is_stored(
    settings: Any, unique_prefix: str, restartable_redis: tuple[str, Any]
) -> None:
    url, (start, stop, _) = restartable_redis
    settings.CACHES = shared_caches(url)
    settings.FRAGCACHE = fragcache(unique_prefix)
    counter = tag_version_key("nav", prefix=unique_prefix)
    stored: list[bytes | None] = []

    def receiver(sender: Any, counters: list[str], **kwargs: Any) -> None:
        # What every other process reads at that moment.  Ours only: the
        # signal is global, and another test's cache, still replaying a
        # bump queued against a server gone, may reach a new one on its port.
        if counter in counters:
            stored.extend(get_fragment_cache().backend.get_many([counter]))

    # The queue retries every breaker cooldown: a short one for the test.
    get_fragment_cache().breaker.cooldown = 0.1
    surrogate_keys_invalidated.connect(receiver)
    try:
        assert invalidate_tags("nav")
        assert len(stored) == 1 and stored[0] is not None
        before = stored.pop()

        stop()
        assert not invalidate_tags("nav")  # queued, not stored: no signal
        assert stored == []

        start()
        deadline = time.monotonic() + 15
        while not stored and time.monotonic() < deadline:
            time.sleep(0.05)  # the queue's own thread replays it
    finally:
        surrogate_keys_invalidated.disconnect(receiver)
    assert len(stored) == 1 and stored[0] is not None and stored[0] != before


# -- a real Varnish ---------------------------------------------------------------------


def low_free_port() -> int:
    """A free loopback port below 55000 (the ports above are kept for others)."""
    for port in random.sample(range(20000, 55000), 500):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail("no free port below 55000 on 127.0.0.1")


@contextmanager
def varnish(backend_port: int, port: int | None = None) -> Iterator[str]:
    """A varnishd with examples/varnish/default.vcl in front of
    *backend_port*; yields its base URL."""
    binary = shutil.which("varnishd") or shutil.which("/usr/sbin/varnishd")
    if binary is None:
        pytest.fail(
            "The CDN tests need Varnish with vmod xkey: "
            "apt-get install varnish varnish-modules"
        )
    # Varnish's own user must read the VCL: a world-readable folder.
    folder = Path(tempfile.mkdtemp(prefix="fragcache-varnish-", dir="/tmp"))
    folder.chmod(0o755)
    source = EXAMPLE_VCL.read_text()
    assert '.port = "8000";' in source
    vcl = folder / "default.vcl"
    vcl.write_text(source.replace('.port = "8000";', f'.port = "{backend_port}";'))
    vcl.chmod(0o644)
    port = port or low_free_port()
    listen, work = f"127.0.0.1:{port}", str(folder / "work")
    command = [binary, "-F", "-a", listen, "-f", str(vcl), "-n", work, "-T", "none"]
    what = "varnishd (apt-get install varnish varnish-modules)"
    try:
        with started([*command, "-s", "malloc,32m"], port, what):
            yield f"http://{listen}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def gunicorn(env: dict[str, str]) -> Iterator[int]:
    """The test site with the CDN settings, served by a real gunicorn."""
    binary = shutil.which("gunicorn") or str(Path(sys.executable).with_name("gunicorn"))
    port = low_free_port()
    command = [binary, "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    settings = {"DJANGO_SETTINGS_MODULE": "tests.djangoapp.cdn_settings"}
    with started(
        [*command, "tests.djangoapp.wsgi:application"],
        port,
        "gunicorn",
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **settings, **env},
    ):
        yield port


@pytest.fixture(scope="module")
def site(redis_url: str) -> Iterator[tuple[str, str]]:
    """``(Varnish URL, key prefix)``: Varnish in front of gunicorn, whose
    fragment cache is a Redis this process shares."""
    prefix = "cdn" + uuid.uuid4().hex[:10]
    env = {"FRAGCACHE_CDN_REDIS_URL": redis_url, "FRAGCACHE_CDN_PREFIX": prefix}
    with gunicorn(env) as port, varnish(port) as edge_url:
        yield edge_url, prefix


@pytest.fixture
def edge_site(site: tuple[str, str], redis_url: str, settings: Any) -> str:
    """This process invalidates on the site's cache and purges its Varnish."""
    edge_url, prefix = site
    settings.CACHES = shared_caches(redis_url)
    settings.FRAGCACHE = fragcache(prefix, [edge_url + "/"])
    return edge_url


def fetch(url: str) -> tuple[str, bool]:
    """The body, and whether Varnish served it from its cache (a hit's
    X-Varnish holds two request ids: this one and the one that stored it)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode(), len(response.headers["X-Varnish"].split()) == 2


PAGES = ("/cdn/a/", "/cdn/b/", "/cdn/c/", "/cdn/view/")


def cached_at_the_edge(edge_url: str) -> dict[str, str]:
    bodies = {}
    for page in PAGES:
        fetch(edge_url + page)
        bodies[page], cached = fetch(edge_url + page)
        assert cached, f"Varnish did not cache {page}"
    return bodies


def test_pages_are_cached_at_the_edge(edge_site: str) -> None:
    first = cached_at_the_edge(edge_site)
    for page, body in first.items():
        assert fetch(edge_site + page) == (body, True)


def _line(body: str, marker: str) -> str:
    return next(line for line in body.splitlines() if marker in line)


@pytest.mark.parametrize(
    ("invalidate", "marker", "purged"),
    [
        (lambda: invalidate_fragment("card", 1), "card 1,", {"/cdn/a/", "/cdn/c/"}),
        (
            lambda: invalidate_fragments("card"),
            "card",
            {"/cdn/a/", "/cdn/b/", "/cdn/c/"},
        ),
        (lambda: invalidate_tags("offers"), "promo", {"/cdn/c/", "/cdn/view/"}),
        (lambda: invalidate_tags("nav"), "menu", {"/cdn/a/", "/cdn/b/"}),
        (lambda: invalidate_view_cache("cdn-view"), "cached view", {"/cdn/view/"}),
    ],
    ids=["one-variant", "every-variant", "tag", "tag-in-jinja2-too", "cached-view"],
)
def test_an_invalidation_purges_exactly_the_pages_that_hold_it(
    edge_site: str, invalidate: Callable[[], bool], marker: str, purged: set[str]
) -> None:
    before = cached_at_the_edge(edge_site)

    assert invalidate()
    assert purges.flush()

    after = {page: fetch(edge_site + page) for page in PAGES}
    assert {page for page, (_, cached) in after.items() if not cached} == purged
    for page, (body, _) in after.items():
        if page in purged:  # rendered again, with what was invalidated
            assert _line(body, marker) != _line(before[page], marker)
        else:
            assert body == before[page]


def test_a_page_whose_variants_were_folded_is_still_purged(edge_site: str) -> None:
    folded = edge_site + "/cdn/many/?n=600"
    fetch(folded)
    assert fetch(folded)[1]
    others = cached_at_the_edge(edge_site)

    assert invalidate_fragment("item", 7)
    assert purges.flush()

    assert not fetch(folded)[1]
    assert {page: fetch(edge_site + page) for page in PAGES} == {
        page: (body, True) for page, body in others.items()
    }


def test_a_page_with_a_form_is_not_shared_at_the_edge(edge_site: str) -> None:
    responses = [fetch(edge_site + "/cdn/form/") for _ in range(3)]
    assert not any(cached for _, cached in responses)
    tokens = {_line(body, "csrfmiddlewaretoken") for body, _ in responses}
    assert len(tokens) == 3  # each visitor got a token of their own


def test_a_failed_purge_is_logged_counted_and_sent_again(
    settings: Any, unique_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = low_free_port()  # nothing listens there, yet
    settings.FRAGCACHE = {
        **fragcache(unique_prefix),
        "PURGE": {
            "BACKEND": "varnish",
            "URLS": [f"http://127.0.0.1:{port}/"],
            "RETRY_INTERVAL": 0.1,
        },
    }
    with caplog.at_level(logging.ERROR, logger="django_bridge"):
        assert invalidate_tags("nav")  # the bump itself is stored
        assert purges.flush()
    tag_key = surrogate_key(tag_version_key("nav", prefix=unique_prefix))
    assert (
        f"at http://127.0.0.1:{port}/ failed" in caplog.text and tag_key in caplog.text
    )
    purger = get_fragment_cache().on_invalidated.purger(conf.settings.purge)
    assert purger.pending == 1
    assert get_cache_stats()["fragments"]["(purges)"]["errors"] >= 1

    with varnish(backend_port=low_free_port(), port=port):
        deadline = time.monotonic() + 15
        while purger.pending and time.monotonic() < deadline:
            time.sleep(0.05)  # the retry thread's work
    assert purger.pending == 0
