"""Whole-response caching for views, on the core's render path.

Usage::

    @cache_view(300)                 # one response for everyone
    def home(request): ...

    @cache_view_per_user(60)         # one per user; anonymous users share one
    def dashboard(request): ...

    @cache_view_per_tenant(600)      # one per tenant; no tenant: not cached
    def reports(request): ...

    invalidate_view_cache("home")               # every cached path of the view, O(1)
    invalidate_view_cache("article", "/a/7/")   # one path, every variant of it

A response is stored only when it is safe to share: a 200 to a GET that did
not write the session, with no ``Set-Cookie``, no
``Cache-Control: private/no-store/no-cache``, no ``Vary: *`` and no
streaming.  The key holds the path, the query string
(without tracking parameters), the values of the request headers the
response varies on (learned from earlier responses, as Django's
``learn_cache_key`` does, including the ``Cookie`` and ``Accept-Language``
that session and locale middleware add later) and the user or the tenant.
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils import translation
from django.utils.decorators import method_decorator
from django.utils.module_loading import import_string

from jinja_fragcache import FragmentCache, FragmentRequest
from jinja_fragcache.cache import build_requests, last_outcome
from jinja_fragcache.keys import headers_key

from .cache import get_fragment_cache
from .conf import settings

logger = logging.getLogger("django_bridge")

View = TypeVar("View", bound=Callable[..., Any])
_NEVER_STORED = ("private", "no-store", "no-cache")
_NOT_REPLAYED = {"set-cookie", "connection", "transfer-encoding", "keep-alive"}


class _Uncacheable(Exception):
    """The response must not be stored; it is served as it is."""

    def __init__(self, response: HttpResponseBase) -> None:
        self.response = response


class _Relearned(_Uncacheable):
    """The response is stored, but under the key its new ``Vary`` headers
    give, not the one being rendered; it is served as it is."""

    def __init__(
        self, response: HttpResponseBase, entry: FragmentRequest, text: str
    ) -> None:
        super().__init__(response)
        self.entry = entry
        self.text = text

    def stored(self) -> str:
        return self.text

    async def astored(self) -> str:
        return self.text


def cache_view(
    timeout: float | None,
    *,
    key_prefix: str | None = None,
    cache: FragmentCache | None = None,
    query_params: Iterable[str] | None = None,
    statuses: Iterable[int] = (200,),
    per: str = "everyone",
    include_host: bool = False,
    vary_on: Iterable[str] = (),
    ignore_params: Iterable[str] = (),
) -> Callable[[View], View]:
    """Cache a view's whole response.

    :param timeout: seconds, ``None`` for never; Django's meaning.
    :param key_prefix: the name entries are kept under; by default the URL
        name (``request.resolver_match.view_name``), else the view's path.
    :param cache: a :class:`FragmentCache`; by default the bridge's.
    :param query_params: when given, the only query parameters in the key;
        otherwise all but ``FRAGCACHE["IGNORED_QUERY_PARAMS"]``.
    :param statuses: the statuses that may be stored.
    :param per: ``"everyone"``, ``"user"`` or ``"tenant"``.
    :param include_host: put the host in the key; off by default, so that
        :func:`invalidate_view_cache` works outside a request.
    :param vary_on: request headers always in the key, besides those the
        responses' ``Vary`` teaches.
    :param ignore_params: query parameters (fnmatch patterns) left out of
        the key, besides ``FRAGCACHE["IGNORED_QUERY_PARAMS"]``.
    """
    if per not in ("everyone", "user", "tenant"):
        raise ValueError(f"per must be 'everyone', 'user' or 'tenant', not {per!r}")
    allowed = None if query_params is None else frozenset(query_params)
    always = sorted({header.lower() for header in vary_on})
    ignored = tuple(ignore_params)
    storable = frozenset(statuses)

    def decorator(view: View) -> View:
        if inspect.isclass(view):
            return method_decorator(decorator, name="dispatch")(view)
        identity = key_prefix or _view_identity(view)

        def plan(request: HttpRequest) -> tuple[FragmentCache, FragmentRequest] | None:
            """The request's cache entry, or None when it must not share one."""
            if request.method not in ("GET", "HEAD"):
                return None
            fragments = cache or get_fragment_cache()
            name = _name(request, key_prefix, identity)
            entry = entry_for(request, fragments, name, learned=None)
            return None if entry is None else (fragments, entry)

        def entry_for(
            request: HttpRequest,
            fragments: FragmentCache,
            name: str,
            learned: list[str] | None,
        ) -> FragmentRequest | None:
            """The entry under the *learned* headers (by default, the stored
            ones), or None when the request must not share one."""
            if learned is None:
                learned = _learned(fragments, name, request.path)
            scope = _scope(request, per, learned)
            if scope is None:
                return None
            headers = sorted({*always, *learned})
            vary = [
                request.path,
                _query(request, allowed, ignored),
                *(f"{h}={request.headers.get(h, '')}" for h in headers),
                scope,
                request.get_host() if include_host else "",
                # The active language, as Django's cache keys hold it:
                # LocaleMiddleware also reads a cookie and the URL prefix,
                # which no learned header shows.
                (translation.get_language() or "") if django_settings.USE_I18N else "",
            ]
            (entry,) = build_requests(
                name,
                [vary],
                timeout=timeout,
                tags=[_path_tag(name, request.path)],
                # The request's CSRF token becomes a hole (see .safety).
                context={"request": request},
                identity=fragments.identity,
            )
            return entry

        def judge(
            request: HttpRequest,
            response: HttpResponseBase,
            fragments: FragmentCache,
            entry: FragmentRequest,
        ) -> str:
            """The stored form of *response*, or :class:`_Uncacheable`."""
            if isinstance(response, HttpResponse) and hasattr(response, "render"):
                response.render()  # a TemplateResponse
            headers = _effective_vary(request, response)
            learned = _learned(fragments, entry.name, request.path)
            relearned = None
            if "*" not in headers and not set(headers) <= {*always, *learned}:
                relearned = sorted({*headers, *learned})
                _learn(fragments, entry.name, request.path, relearned)
            if (
                request.method != "GET"
                or _writes_session(request)
                or _refused(response, storable, headers)
            ):
                raise _Uncacheable(response)
            if relearned is None:
                return _serialize(response)
            # Keyed without those headers: stored, as Django's
            # learn_cache_key does, under the key they give, once the
            # entry being rendered has let go of its lock.
            learned_entry = entry_for(request, fragments, entry.name, relearned)
            if learned_entry is None:
                raise _Uncacheable(response)
            raise _Relearned(response, learned_entry, _serialize(response))

        if inspect.iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapper(
                request: HttpRequest, *args: Any, **kwargs: Any
            ) -> Any:
                # Who the user is may need the database, and the learned
                # headers the cache: both sync, so off the event loop.
                planned = await sync_to_async(plan)(request)
                if planned is None:
                    return _mark(await view(request, *args, **kwargs), "MISS")
                fragments, entry = planned
                fresh: list[HttpResponseBase] = []

                async def render() -> str:
                    fresh.append(await view(request, *args, **kwargs))
                    return await sync_to_async(judge)(
                        request, fresh[0], fragments, entry
                    )

                try:
                    stored = await fragments.render_async(entry, render)
                except _Relearned as moved:
                    await fragments.render_async(moved.entry, moved.astored)
                    return _mark(moved.response, "MISS")
                except _Uncacheable as refused:
                    return _mark(refused.response, "MISS")
                return _respond(request, stored, fresh)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            planned = plan(request)
            if planned is None:
                return _mark(view(request, *args, **kwargs), "MISS")
            fragments, entry = planned
            fresh: list[HttpResponseBase] = []

            def render() -> str:
                fresh.append(view(request, *args, **kwargs))
                return judge(request, fresh[0], fragments, entry)

            try:
                stored = fragments.render(entry, render)
            except _Relearned as moved:
                fragments.render(moved.entry, moved.stored)
                return _mark(moved.response, "MISS")
            except _Uncacheable as refused:
                return _mark(refused.response, "MISS")
            return _respond(request, stored, fresh)

        return wrapper  # type: ignore[return-value]

    return decorator


def cache_view_per_user(
    timeout: float | None, **options: Any
) -> Callable[[View], View]:
    """:func:`cache_view` keyed by user id; anonymous users share one entry,
    never an authenticated user's."""
    return cache_view(timeout, per="user", **options)


def cache_view_per_tenant(
    timeout: float | None, **options: Any
) -> Callable[[View], View]:
    """:func:`cache_view` keyed by tenant: ``request.tenant`` (its ``pk`` or
    ``schema_name``, as django-tenants has it) or ``FRAGCACHE["TENANT_RESOLVER"]``.
    With no tenant the response is not cached, never shared."""
    return cache_view(timeout, per="tenant", **options)


def cache_api_response(
    timeout: float | None,
    *,
    vary_on: Iterable[str] = (),
    statuses: Iterable[int] = range(200, 300),
    **options: Any,
) -> Callable[[View], View]:
    """:func:`cache_view` for Django REST framework views.

    It stores the **rendered** bytes, status and headers, never a pickled
    ``Response``, and keys on the negotiated renderer (the ``Accept`` header
    and the ``format`` parameter), the query string and *vary_on* headers.
    Any 2xx may be stored.  Put it above ``@api_view``, or on the ``APIView``
    class, so it sees the finished response::

        @cache_api_response(60, vary_on=["Accept-Language"])
        @api_view(["GET"])
        def products(request): ...
    """
    return cache_view(
        timeout, vary_on=["Accept", *vary_on], statuses=statuses, **options
    )


#: The query parameters DRF's paginators read.
PAGINATION_PARAMS = ("page", "page_size", "limit", "offset", "cursor")


def cache_api_list(
    timeout: float | None, *, per_page: bool = True, **options: Any
) -> Callable[[View], View]:
    """:func:`cache_api_response` for paginated lists.

    Each page (``page``, ``page_size``, ``limit``/``offset``, ``cursor``) has
    its own entry, and ``invalidate_view_cache(name, path)`` clears them all
    at once.  With ``per_page=False`` (a list that ignores pagination) those
    parameters are left out of the key.
    """
    if not per_page:
        options["ignore_params"] = (
            *options.get("ignore_params", ()),
            *PAGINATION_PARAMS,
        )
    return cache_api_response(timeout, **options)


def invalidate_view_cache(view_name: str, path: str | None = None) -> bool:
    """Clear the cached responses of a view: every path (``path=None``), or
    every variant of one path.  O(1): a version bump, no key scan.

    *view_name* is what the entries are kept under: the URL name (with its
    namespace) or, for a view without one, its dotted path.
    """
    fragments = get_fragment_cache()
    name = VIEW_PREFIX + view_name
    if path is None:
        return fragments.invalidate_all(name)
    return fragments.invalidate_tags(_path_tag(name, path))


# -- the parts ------------------------------------------------------------------


#: Starts the name of every cached view, which keeps them apart from
#: template fragments in keys and statistics.
VIEW_PREFIX = "view:"


def _name(request: HttpRequest, key_prefix: str | None, identity: str) -> str:
    if key_prefix:
        return VIEW_PREFIX + key_prefix
    match = getattr(request, "resolver_match", None)
    name = match.view_name if match is not None and match.url_name else identity
    return VIEW_PREFIX + name


def _view_identity(view: Callable[..., Any]) -> str:
    """The dotted path a view with no URL name is kept under: a partial's
    function's, else the view's own, else (a callable instance, a mock) its
    class's.

    :raises TypeError: when *view* is not callable.
    """
    if not callable(view):
        raise TypeError(
            f"cache_view() needs a view, not {view!r}; "
            "pass key_prefix= to name its entries"
        )
    target: Any = view
    while isinstance(target, functools.partial):
        target = target.func
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if not (isinstance(module, str) and isinstance(qualname, str)):
        module, qualname = type(target).__module__, type(target).__qualname__
    return f"{module}.{qualname}"


def _path_tag(name: str, path: str) -> str:
    return f"{name} {path}"


def _query(
    request: HttpRequest, allowed: frozenset[str] | None, extra: tuple[str, ...]
) -> str:
    ignored = (*settings.IGNORED_QUERY_PARAMS, *extra)
    pairs = sorted(
        (key, value)
        for key, values in request.GET.lists()
        for value in values
        if (
            key in allowed
            if allowed is not None
            else not any(fnmatch.fnmatch(key, p) for p in ignored)
        )
    )
    return json.dumps(pairs, separators=(",", ":"))


def _authenticated(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated)


def _scope(request: HttpRequest, per: str, learned: list[str]) -> str | None:
    """Who may share the entry, without counting as a use of the session:
    only the view's own use of it makes a response vary on ``Cookie``."""
    session = getattr(request, "session", None)
    accessed = session.accessed if session is not None else True
    try:
        return _audience(request, per, learned)
    finally:
        if not accessed:
            session.accessed = False  # type: ignore[union-attr]


def _audience(request: HttpRequest, per: str, learned: list[str]) -> str | None:
    if per == "user":
        return f"user:{request.user.pk}" if _authenticated(request) else "anonymous"
    if per == "tenant":
        tenant = _tenant(request)
        if tenant is None:
            logger.info("no tenant for %s: the response is not cached", request.path)
        return None if tenant is None else f"tenant:{tenant}"
    # Shared: a request with credentials gets its own page unless the
    # response varies on those credentials.
    if "authorization" in request.headers and "authorization" not in learned:
        return None
    if _authenticated(request) and "cookie" not in learned:
        return None
    return "everyone"


def _tenant(request: HttpRequest) -> str | None:
    resolver = settings.TENANT_RESOLVER
    if resolver:
        function = import_string(resolver) if isinstance(resolver, str) else resolver
        found = function(request)
        return None if found is None else str(found)
    tenant = getattr(request, "tenant", None)
    if tenant is None:
        return None
    value = getattr(tenant, "pk", None) or getattr(tenant, "schema_name", None)
    return None if value is None else str(value)


def _learned(fragments: FragmentCache, name: str, path: str) -> list[str]:
    key = headers_key(name, path, prefix=fragments.prefix)
    try:
        raw = fragments.backend.get_many([key])[0]
        headers = json.loads(raw) if raw else []
    except Exception:  # unreachable or unreadable: learn again
        return []
    return [str(h) for h in headers] if isinstance(headers, list) else []


def _learn(fragments: FragmentCache, name: str, path: str, headers: list[str]) -> None:
    key = headers_key(name, path, prefix=fragments.prefix)
    try:
        fragments.backend.set(key, json.dumps(headers).encode(), None)
    except Exception:
        logger.exception("could not store the Vary headers of %s %s", name, path)


def _effective_vary(request: HttpRequest, response: HttpResponseBase) -> list[str]:
    """The headers the response varies on, with those middleware will add."""
    headers = {
        h.strip().lower() for h in response.get("Vary", "").split(",") if h.strip()
    }
    session = getattr(request, "session", None)
    if session is not None and session.accessed:
        headers.add("cookie")  # SessionMiddleware adds Vary: Cookie
    if "django.middleware.locale.LocaleMiddleware" in django_settings.MIDDLEWARE:
        headers.add("accept-language")
    return sorted(headers)


def _writes_session(request: HttpRequest) -> bool:
    """Whether SessionMiddleware will save the session, and set its cookie,
    after this response: the body may then be this visitor's alone."""
    session = getattr(request, "session", None)
    if session is None:
        return False
    if session.modified:
        return True
    return bool(
        django_settings.SESSION_SAVE_EVERY_REQUEST
        and session.session_key is None
        and not session.is_empty()
    )


def _refused(
    response: HttpResponseBase, statuses: frozenset[int], vary: list[str]
) -> bool:
    cache_control = response.get("Cache-Control", "").lower()
    return bool(
        response.status_code not in statuses
        or response.streaming
        or response.cookies
        or "Set-Cookie" in response
        or any(word in cache_control for word in _NEVER_STORED)
        or "*" in vary
    )


def _serialize(response: HttpResponseBase) -> str:
    content: bytes = response.content  # type: ignore[attr-defined]
    try:
        body, encoding = content.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        body, encoding = content.decode("latin-1"), "latin-1"
    headers = [[k, v] for k, v in response.items() if k.lower() not in _NOT_REPLAYED]
    meta = {"status": response.status_code, "headers": headers, "encoding": encoding}
    return json.dumps(meta, separators=(",", ":")) + "\n" + body


def _respond(
    request: HttpRequest, stored: str, fresh: list[HttpResponseBase]
) -> HttpResponseBase:
    if fresh:  # rendered by this very request
        return _mark(fresh[0], "MISS")
    meta, _, body = stored.partition("\n")
    data = json.loads(meta)
    response = HttpResponse(body.encode(data["encoding"]), status=data["status"])
    for key, value in data["headers"]:
        response[key] = value
    if request.method == "HEAD":
        response.content = b""
    return _mark(response, "STALE" if last_outcome() == "stale" else "HIT")


def _mark(response: HttpResponseBase, state: str) -> HttpResponseBase:
    header = settings.VIEW_DEBUG_HEADER
    if header:
        response[header] = state
    return response
