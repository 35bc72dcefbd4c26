"""Django's own ``cache_page`` tests, run against :func:`cache_view`.

Ported (rewritten, not copied) from Django's test suite, BSD licensed, by
the Django Software Foundation and contributors: ``tests/cache/tests.py``,
classes

- ``CacheMiddlewareTest``: the view decorator with timeouts, prefixes and
  caches; ``Cache-Control`` refusals; the CSRF cookie; 304s;
- ``CacheUtils`` / ``PrefixedCacheUtils``: the keys ``learn_cache_key``
  makes (query string, host, key prefix, the learned ``Vary`` headers, which
  ``patch_vary_headers`` spells in any case);
- ``CacheHEADTest``: HEAD served from the cached GET;
- ``CacheI18nTest``: the query string and the language in the key, and
  streaming responses;
- ``TestWithTemplateResponse``: an unrendered ``TemplateResponse``.

Django tests its middleware and ``get_cache_key`` directly; we have neither,
so each case asks the same question of the decorated view: is the second
request answered by the first response (the view does not run again)?

Where we differ from Django on purpose, the case asserts our behaviour and
the comment names one of these reasons (constants below):

- ``CREDENTIALS_BYPASS``: requests with credentials (a logged-in user, an
  ``Authorization`` header) bypass the shared cache, where Django relies on
  ``Vary: Authorization`` / ``Vary: Cookie``;
- ``NO_BROWSER_TTL``: we set no ``max-age``, ``Expires`` or ``Age``, so that
  ``invalidate_view_cache()`` reaches browsers too;
- ``SESSION_WRITE``: a response whose view wrote the session is never stored;
- ``HEADERS_NOT_DERIVED``: the key holds the request headers the response
  varies on, not the language or host Django derives from the request.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from django.contrib.sessions.backends.signed_cookies import SessionStore
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseNotFound,
    HttpResponseNotModified,
    StreamingHttpResponse,
)
from django.middleware.csrf import (  # type: ignore[attr-defined]
    CsrfViewMiddleware,
    _does_token_match,
    get_token,
)
from django.middleware.locale import LocaleMiddleware
from django.template import engines
from django.template.response import TemplateResponse
from django.test import RequestFactory
from django.utils import translation
from django.utils.cache import patch_vary_headers
from django.views.decorators.cache import cache_control

from django_bridge.views import cache_view
from jinja_fragcache import FragmentCache, MemoryBackend

#: Requests with credentials bypass the shared cache, where Django adds (or
#: relies on) ``Vary: Authorization`` / ``Vary: Cookie``: one visitor's page
#: is never anybody else's, even when the view forgets to say it varies.
CREDENTIALS_BYPASS = "credentials bypass the shared cache"
#: We set no ``max-age`` or ``Expires``: a browser that kept the page would
#: never see ``invalidate_view_cache()``, which only reaches our cache.
NO_BROWSER_TTL = "no max-age/Expires, so server-side invalidation reaches browsers"
#: A response whose view wrote the session is never stored: the session
#: cookie SessionMiddleware sets afterwards makes the body that visitor's.
SESSION_WRITE = "never store a response whose view wrote the session"
#: The key holds the request headers the response varies on, never the
#: language or host Django derives: ``invalidate_view_cache(name, path)``
#: must reach every entry without a request in hand.
HEADERS_NOT_DERIVED = "keyed on varied-on headers, not derived values"


@pytest.fixture(autouse=True)
def fresh(settings: Any) -> None:
    """A key prefix of the test's own, as Django's tearDown's cache.clear()."""
    settings.FRAGCACHE = {"KEY_PREFIX": "dj" + uuid.uuid4().hex[:10]}


@pytest.fixture
def rf() -> RequestFactory:
    return RequestFactory()


def hello_world_view(request: HttpRequest, value: Any) -> HttpResponse:
    return HttpResponse(f"Hello World {value}")


def counting(
    make: Callable[[HttpRequest], HttpResponse],
) -> tuple[Callable[..., HttpResponse], list[int]]:
    """A view built by *make*, and the list its runs are counted in."""
    runs: list[int] = []

    def view(request: HttpRequest) -> HttpResponse:
        runs.append(1)
        return make(request)

    return view, runs


class Member:
    """A logged-in user, without the database."""

    pk = 7
    is_authenticated = True


# -- CacheMiddlewareTest -------------------------------------------------------


def test_view_decorator(rf: Any) -> None:
    """The same view under several decorators: one entry per prefix and
    cache, shared across timeouts."""
    other = FragmentCache(MemoryBackend(), stale_grace=0)
    default_view = cache_view(3)(hello_world_view)
    default_with_prefix_view = cache_view(3, key_prefix="prefix1")(hello_world_view)
    other_view = cache_view(0.5, cache=other)(hello_world_view)
    other_with_prefix_view = cache_view(0.5, cache=other, key_prefix="prefix2")(
        hello_world_view
    )
    request = rf.get("/view/")

    def content(view: Callable[..., HttpResponse], value: str) -> bytes:
        return view(rf.get("/view/"), value).content

    assert content(default_view, "1") == b"Hello World 1"
    assert content(default_view, "2") == b"Hello World 1"
    # Django's timeout_middleware: another timeout, the same entry.
    assert cache_view(1)(hello_world_view)(request, "3").content == b"Hello World 1"
    assert content(default_with_prefix_view, "4") == b"Hello World 4"
    assert content(default_with_prefix_view, "5") == b"Hello World 4"
    assert content(other_view, "7") == b"Hello World 7"
    assert content(other_view, "8") == b"Hello World 7"
    assert content(other_with_prefix_view, "9") == b"Hello World 9"

    time.sleep(1)  # Django sleeps 2 s past a 1 s timeout; ours are shorter

    assert content(default_view, "11") == b"Hello World 1"
    assert content(default_with_prefix_view, "12") == b"Hello World 4"
    assert content(other_view, "15") == b"Hello World 15"
    assert content(other_with_prefix_view, "16") == b"Hello World 16"


def test_a_prefix_of_its_own_is_another_entry(rf: Any) -> None:
    """Django's test_middleware: ``prefix_middleware`` does not hit."""
    cache_view(60)(hello_world_view)(rf.get("/view/"), "1")
    prefixed = cache_view(60, key_prefix="prefix1")(hello_world_view)
    assert prefixed(rf.get("/view/"), "2").content == b"Hello World 2"


@pytest.mark.parametrize("directive", ["private", "no_cache", "no_store"])
def test_cache_control_not_cached(rf: Any, directive: str) -> None:
    view = cache_view(3)(cache_control(**{directive: True})(hello_world_view))
    assert view(rf.get("/view/"), "1").content == b"Hello World 1"
    assert view(rf.get("/view/"), "2").content == b"Hello World 2"


def test_cache_page_timeout_and_the_views_max_age(rf: Any) -> None:
    """Django: the page timeout wins over the view's ``max-age`` on the
    server.  Ours too, and the view's own ``Cache-Control`` is replayed
    unchanged (no max-age of ours is merged in: NO_BROWSER_TTL)."""
    view = cache_view(60)(cache_control(max_age=1)(hello_world_view))
    view(rf.get("/view/"), "1")
    time.sleep(1.1)
    second = view(rf.get("/view/"), "2")
    assert second.content == b"Hello World 1"
    assert second["Cache-Control"] == "max-age=1"


def test_cache_control_max_age(rf: Any) -> None:
    """Django sets ``Expires`` and ``max-age`` to the page timeout, and
    ``Age`` on a hit.  We set none of them: NO_BROWSER_TTL."""
    view = cache_view(2)(hello_world_view)
    first = view(rf.get("/view/"), 1)
    second = view(rf.get("/view/"), 1)
    for response in (first, second):
        assert "Expires" not in response
        assert "Cache-Control" not in response
        assert "Age" not in response
    assert (first["X-Cache"], second["X-Cache"]) == ("MISS", "HIT")


def test_sensitive_cookie_not_cached(rf: Any) -> None:
    """A CSRF cookie set for a cookie-less request must not be shared.

    Django refuses to store the response at all.  Ours may store it,
    with the token as a hole each request fills with its own: what matters,
    and what we assert, is that the second visitor never gets the first's
    token."""

    def csrf_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(
            f'<input name="csrfmiddlewaretoken" value="{get_token(request)}">'
        )

    cached = cache_view(60)(csrf_view)
    stack = CsrfViewMiddleware(cached)

    def visit() -> tuple[HttpResponse, str]:
        request = rf.get("/view/")
        stack.process_view(request, cached, (), {})
        response = stack(request)
        return response, response.cookies["csrftoken"].value

    first, first_secret = visit()
    second, second_secret = visit()
    assert first_secret != second_secret
    assert first.content != second.content
    for response, secret in ((first, first_secret), (second, second_secret)):
        token = response.content.decode().split('value="')[1].split('"')[0]
        assert _does_token_match(token, secret)


def test_a_view_that_sets_a_cookie_is_not_cached(rf: Any) -> None:
    """The ``Set-Cookie`` half of the same test, set by the view itself."""

    def make(request: HttpRequest) -> HttpResponse:
        response = HttpResponse("mine")
        response.set_cookie("visitor", uuid.uuid4().hex)
        return response

    view, runs = counting(make)
    cached = cache_view(60)(view)
    cached(rf.get("/view/"))
    assert cached(rf.get("/view/")).cookies
    assert len(runs) == 2


def test_304_response_not_cached(rf: Any) -> None:
    """Django stores no 304 but adds ``Cache-Control`` and ``Expires`` to
    it; we add neither: NO_BROWSER_TTL."""
    original_view = mock.Mock(return_value=HttpResponseNotModified())
    view = cache_view(2)(original_view)
    view(rf.get("/view/"))
    response = view(rf.get("/view/"))
    assert original_view.call_count == 2
    assert isinstance(response, HttpResponseNotModified)
    assert "Cache-Control" not in response
    assert "Expires" not in response


def test_404_not_cached_by_default_but_on_request(rf: Any) -> None:
    """As Django's UpdateCacheMiddleware (200 and 304 only), a 404 is not
    stored by default; ``statuses=`` lets a view store it."""
    view, runs = counting(lambda request: HttpResponseNotFound("gone"))
    cache_view(60)(view)(rf.get("/view/"))
    cache_view(60)(view)(rf.get("/view/"))
    assert len(runs) == 2
    stored = cache_view(60, statuses=(200, 404), key_prefix="with-404")(view)
    stored(rf.get("/view/"))
    assert stored(rf.get("/view/")).status_code == 404
    assert len(runs) == 3


def test_post_is_not_cached(rf: Any) -> None:
    view, runs = counting(lambda request: HttpResponse("posted"))
    cached = cache_view(60)(view)
    cached(rf.get("/view/"))
    cached(rf.post("/view/"))
    cached(rf.post("/view/"))
    assert len(runs) == 3


# -- CacheUtils / PrefixedCacheUtils -----------------------------------------


def test_get_cache_key_with_query(rf: Any) -> None:
    """The query string is in the key; Django's CacheI18nTest.test_middleware
    checks the same with ``foo=bar&other=true``."""
    view, runs = counting(lambda request: HttpResponse(request.GET.urlencode()))
    cached = cache_view(60)(view)
    cached(rf.get("/cache/test/", {"foo": "bar", "other": "true"}))
    hit = cached(rf.get("/cache/test/", {"foo": "bar", "other": "true"}))
    assert hit.content == b"foo=bar&other=true" and len(runs) == 1
    cached(rf.get("/cache/test/", {"foo": "bar", "somethingelse": "true"}))
    assert len(runs) == 2


def test_cache_key_varies_by_url(rf: Any) -> None:
    """Django keys on the whole URL, host included.  By default we key on
    the path alone, so that ``invalidate_view_cache(name, path)`` works
    outside a request (HEADERS_NOT_DERIVED); ``include_host=True`` keys on
    the host as Django does."""
    view, runs = counting(lambda request: HttpResponse(request.get_host()))
    shared = cache_view(60)(view)
    shared(rf.get("/cache/test/", HTTP_HOST="a.example"))
    assert shared(rf.get("/cache/test/", HTTP_HOST="b.example")).content == b"a.example"
    per_host = cache_view(60, include_host=True, key_prefix="hosts")(view)
    per_host(rf.get("/cache/test/", HTTP_HOST="a.example"))
    assert (
        per_host(rf.get("/cache/test/", HTTP_HOST="b.example")).content == b"b.example"
    )
    assert len(runs) == 3


def test_learn_cache_key(rf: Any) -> None:
    """A response's ``Vary`` header is learned, and (as ``learn_cache_key``
    does) the response that taught it is stored under the key it gives."""

    def make(request: HttpRequest) -> HttpResponse:
        response = HttpResponse(request.headers.get("Pony", "none"))
        response["Vary"] = "Pony"
        return response

    view, runs = counting(make)
    cached = cache_view(60)(view)
    assert cached(rf.get("/cache/test/", HTTP_PONY="a")).content == b"a"
    assert cached(rf.get("/cache/test/", HTTP_PONY="a")).content == b"a"
    assert len(runs) == 1
    assert cached(rf.get("/cache/test/", HTTP_PONY="b")).content == b"b"
    assert cached(rf.get("/cache/test/")).content == b"none"
    assert len(runs) == 3


@pytest.mark.parametrize(
    "spelling", ["accept-encoding", "ACCEPT-ENCODING", "Accept-Encoding"]
)
def test_patch_vary_headers_drives_the_key(rf: Any, spelling: str) -> None:
    """``patch_vary_headers`` keeps the view's spelling; the key does not
    depend on it."""

    def make(request: HttpRequest) -> HttpResponse:
        response = HttpResponse(request.headers.get("Accept-Encoding", ""))
        patch_vary_headers(response, ["Cookie", spelling])
        return response

    view, runs = counting(make)
    cached = cache_view(60)(view)
    cached(rf.get("/view/", HTTP_ACCEPT_ENCODING="gzip"))
    assert cached(rf.get("/view/", HTTP_ACCEPT_ENCODING="gzip")).content == b"gzip"
    assert cached(rf.get("/view/", HTTP_ACCEPT_ENCODING="br")).content == b"br"
    assert len(runs) == 2


def test_vary_star_is_not_cached(rf: Any) -> None:
    """``patch_vary_headers`` with ``*``: nothing can be keyed on it."""

    def make(request: HttpRequest) -> HttpResponse:
        response = HttpResponse("any")
        patch_vary_headers(response, ["Accept-Language", "*"])
        return response

    view, runs = counting(make)
    cached = cache_view(60)(view)
    cached(rf.get("/view/"))
    cached(rf.get("/view/"))
    assert len(runs) == 2


def test_key_prefix_is_taken_into_account(rf: Any) -> None:
    """``learn_cache_key(..., key_prefix=...)``: the same path under two
    prefixes is two entries, each reused."""
    view, runs = counting(lambda request: HttpResponse(str(len(runs))))
    local = cache_view(60, key_prefix="localprefix")(view)
    settings_ = cache_view(60, key_prefix="settingsprefix")(view)
    assert local(rf.get("/cache/test/")).content == b"1"
    assert settings_(rf.get("/cache/test/")).content == b"2"
    assert local(rf.get("/cache/test/")).content == b"1"
    assert settings_(rf.get("/cache/test/")).content == b"2"


# -- CacheHEADTest ---------------------------------------------------------------


def test_head_with_cached_get(rf: Any) -> None:
    """Django returns the cached body and lets the handler drop it; we drop
    it ourselves."""
    view, runs = counting(lambda request: HttpResponse("test content"))
    cached = cache_view(60)(view)
    cached(rf.get("/cache/test/"))
    head = cached(rf.head("/cache/test/"))
    assert head.status_code == 200 and head.content == b""
    assert head["X-Cache"] == "HIT" and len(runs) == 1


def test_head_caches_correctly(rf: Any) -> None:
    """Django stores the response to a HEAD under the GET's key.  We store
    only GETs: a view may answer HEAD with an empty body (or none of its
    headers), which would then be served to every GET."""
    view, runs = counting(lambda request: HttpResponse("test content"))
    cached = cache_view(60)(view)
    cached(rf.head("/cache/test/"))
    cached(rf.head("/cache/test/"))
    assert cached(rf.get("/cache/test/")).content == b"test content"
    assert len(runs) == 3


# -- CacheI18nTest ---------------------------------------------------------------


def localized(request: HttpRequest) -> HttpResponse:
    return HttpResponse(
        {"en": "Hello world!", "es": "Hola mundo!"}[translation.get_language()[:2]]
    )


@pytest.fixture
def i18n(settings: Any) -> None:
    settings.USE_I18N = True
    settings.LANGUAGES = [("en", "English"), ("es", "Spanish")]
    settings.LANGUAGE_CODE = "en"
    settings.MIDDLEWARE = [
        *settings.MIDDLEWARE,
        "django.middleware.locale.LocaleMiddleware",
    ]


@pytest.mark.usefixtures("i18n")
def test_middleware_i18n(rf: Any) -> None:
    """Django keys on the active language; we key on ``Accept-Language``,
    which LocaleMiddleware reads and says the response varies on
    (HEADERS_NOT_DERIVED)."""
    view, runs = counting(localized)
    stack = LocaleMiddleware(cache_view(60)(view))
    assert (
        stack(rf.get("/cache/test/", HTTP_ACCEPT_LANGUAGE="en")).content
        == b"Hello world!"
    )
    assert (
        stack(rf.get("/cache/test/", HTTP_ACCEPT_LANGUAGE="es")).content
        == b"Hola mundo!"
    )
    assert (
        stack(rf.get("/cache/test/", HTTP_ACCEPT_LANGUAGE="en")).content
        == b"Hello world!"
    )
    assert (
        stack(rf.get("/cache/test/", HTTP_ACCEPT_LANGUAGE="es")).content
        == b"Hola mundo!"
    )
    assert len(runs) == 2


@pytest.mark.usefixtures("i18n")
def test_cache_key_i18n_translation_accept_language(rf: Any) -> None:
    """Django: ``en-us``, ``en-US,en;q=0.8`` ... all resolve to ``en``, one
    key.  Ours keys on the header as sent, so each spelling is an entry of
    its own, each with the right language (HEADERS_NOT_DERIVED): more
    entries, never a wrong one."""
    view, runs = counting(localized)
    stack = LocaleMiddleware(cache_view(60)(view))
    for header in ("en-us", "en-US,en;q=0.8", "ko, en"):
        assert (
            stack(rf.get("/p/", HTTP_ACCEPT_LANGUAGE=header)).content == b"Hello world!"
        )
        assert stack(rf.get("/p/", HTTP_ACCEPT_LANGUAGE=header))["X-Cache"] == "HIT"
    assert len(runs) == 3


@pytest.mark.usefixtures("i18n")
def test_the_language_cookie_is_in_the_key(rf: Any) -> None:
    stack = LocaleMiddleware(cache_view(60)(localized))
    chose_spanish = rf.get("/p/", HTTP_ACCEPT_LANGUAGE="en")
    chose_spanish.COOKIES["django_language"] = "es"
    assert stack(chose_spanish).content == b"Hola mundo!"
    assert stack(rf.get("/p/", HTTP_ACCEPT_LANGUAGE="en")).content == b"Hello world!"


def test_middleware_doesnt_cache_streaming_response(rf: Any) -> None:
    runs: list[int] = []

    def view(request: HttpRequest) -> StreamingHttpResponse:
        runs.append(1)
        return StreamingHttpResponse(["Check for cache with streaming content."])

    cached = cache_view(60)(view)
    cached(rf.get("/cache/test/"))
    assert cached(rf.get("/cache/test/")).streaming
    assert len(runs) == 2


# -- TestWithTemplateResponse ------------------------------------------------------


def test_template_response(rf: Any) -> None:
    """An unrendered ``TemplateResponse`` is rendered, then stored."""
    template = engines["django"].from_string("This is a test")
    view, runs = counting(lambda request: TemplateResponse(request, template))
    cached = cache_view(60)(view)
    cached(rf.get("/cache/test/"))
    assert cached(rf.get("/cache/test/")).content == b"This is a test"
    assert len(runs) == 1


# -- sessions and credentials ------------------------------------------------------


def with_session(request: HttpRequest) -> HttpRequest:
    request.session = SessionStore()  # type: ignore[attr-defined]
    return request


def test_a_view_that_reads_the_session_is_keyed_per_session(rf: Any) -> None:
    """SessionMiddleware adds ``Vary: Cookie`` after the decorator has
    stored; Django's ``cache_page`` would key without it, and serve one
    session's page to another.  We key on the Cookie header at once."""
    view, runs = counting(lambda request: HttpResponse(request.session.get("n", "?")))
    cached = cache_view(60)(view)
    cached(with_session(rf.get("/view/", HTTP_COOKIE="sessionid=ann")))
    assert (
        cached(with_session(rf.get("/view/", HTTP_COOKIE="sessionid=ann")))["X-Cache"]
        == "HIT"
    )
    cached(with_session(rf.get("/view/", HTTP_COOKIE="sessionid=bob")))
    assert len(runs) == 2


def test_a_view_that_writes_the_session_is_not_cached(rf: Any) -> None:
    """SESSION_WRITE: Django would store it (the cookie comes later)."""

    def make(request: HttpRequest) -> HttpResponse:
        request.session["seen"] = True
        return HttpResponse("welcome")

    view, runs = counting(make)
    cached = cache_view(60)(view)
    cached(with_session(rf.get("/view/")))
    cached(with_session(rf.get("/view/")))
    assert len(runs) == 2


def test_authorization_bypasses_the_shared_cache(rf: Any) -> None:
    """CREDENTIALS_BYPASS: Django keys on the header only if the response
    says ``Vary: Authorization``; otherwise it shares the page."""
    view, runs = counting(lambda request: HttpResponse("page"))
    cached = cache_view(60)(view)
    cached(rf.get("/view/"))
    bearer = cached(rf.get("/view/", HTTP_AUTHORIZATION="Bearer secret"))
    assert bearer["X-Cache"] == "MISS"
    cached(rf.get("/view/", HTTP_AUTHORIZATION="Bearer secret"))
    assert len(runs) == 3
    assert cached(rf.get("/view/"))["X-Cache"] == "HIT"


def test_a_logged_in_user_bypasses_the_shared_cache(rf: Any) -> None:
    """CREDENTIALS_BYPASS: what a member sees is neither served from nor
    stored in the anonymous page."""
    view, runs = counting(lambda request: HttpResponse(f"hi {request.user.pk}"))
    cached = cache_view(60)(view)
    member = rf.get("/view/")
    member.user = Member()
    assert cached(member).content == b"hi 7"
    anonymous = rf.get("/view/")
    anonymous.user = mock.Mock(is_authenticated=False, pk=None)
    assert cached(anonymous).content == b"hi None"
    again = rf.get("/view/")
    again.user = Member()
    assert cached(again).content == b"hi 7"
    assert len(runs) == 3
