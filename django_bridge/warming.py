"""Warming caches on deploy: values, rendered pages, and scopes of both.

Apps declare what to warm; the library hard-codes nothing::

    @warmer("homepage")
    def homepage():
        yield "/"                                         # a URL, as a visitor
        yield {"key": "top10", "data_func": top_products, "timeout": 600}

    @warmer("users", per_user=True)
    def dashboards(user):
        yield ("/dashboard/", user)                      # a URL, as that user

``python manage.py warm_cache`` runs them (see its ``--help``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import caches

from jinja_fragcache.timeouts import check_timeout

from .conf import settings

#: A thing to warm: a spec dict, a URL path, or a (path, user) pair.
Task = Mapping[str, Any] | str | tuple[str, Any]


@dataclass
class Result:
    target: str
    ok: bool
    seconds: float
    error: str = ""


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)

    @property
    def warmed(self) -> int:
        return sum(r.ok for r in self.results)

    @property
    def failed(self) -> int:
        return sum(not r.ok for r in self.results)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.results)


@dataclass(frozen=True)
class Warmer:
    function: Callable[..., Iterable[Task] | None]
    per_user: bool


_warmers: dict[str, list[Warmer]] = {}


def warmer(
    scope: str, *, per_user: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a function under *scope*; it yields tasks (see the module).

    With *per_user* it is called once for each of the most recently active
    users, with the user.
    """

    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        _warmers.setdefault(scope, []).append(Warmer(function, per_user))
        return function

    return register


def scopes() -> dict[str, list[Warmer]]:
    """The registered scopes."""
    return dict(_warmers)


def warm_cache(key: str, data_func: Callable[[], Any], timeout: float | None) -> Any:
    """Compute ``data_func()``, store it under *key* in the fragment cache's
    Django cache alias, and return it.  A timeout of 0 stores nothing."""
    seconds = check_timeout(timeout)
    value = data_func()
    if seconds != 0:
        caches[settings.cache_alias].set(key, value, seconds)
    return value


def warm_url(
    path: str, *, user: Any = None, headers: Mapping[str, str] | None = None
) -> int:
    """Request *path* through Django's test client, as *user* if given, so
    view and fragment caches fill as a real request fills them.

    :returns: the status code.  :raises RuntimeError: for a 4xx or 5xx.
    """
    from django.test import Client

    client = Client(headers=dict(headers or {}))
    if user is not None:
        client.force_login(user)
    response = client.get(path)
    if response.status_code >= 400:
        raise RuntimeError(f"{path} answered {response.status_code}")
    return response.status_code


def run_task(task: Task) -> Result:
    """Warm one thing; an error is reported, never raised."""
    target = describe(task)
    start = time.perf_counter()
    try:
        if isinstance(task, str):
            warm_url(task)
        elif isinstance(task, tuple):
            warm_url(task[0], user=task[1])
        else:
            warm_cache(task["key"], task["data_func"], task.get("timeout"))
    except Exception as exc:
        return Result(
            target, False, time.perf_counter() - start, f"{type(exc).__name__}: {exc}"
        )
    return Result(target, True, time.perf_counter() - start)


def describe(task: Task) -> str:
    if isinstance(task, str):
        return task
    if isinstance(task, tuple):
        return f"{task[0]} as {task[1]}"
    return str(task.get("key"))


def warm_cache_batch(specs: Iterable[Mapping[str, Any]]) -> Report:
    """Warm every ``{"key", "data_func", "timeout"}`` spec; one failure never
    stops the others.  The report has, per key, ok or the error, and seconds."""
    return Report([run_task(spec) for spec in specs])


def tasks_for(names: Iterable[str], *, user_limit: int = 50) -> list[Task]:
    """Every task the given scopes yield (``"all"``: every scope)."""
    wanted = set(names)
    selected = [
        w
        for scope, ws in _warmers.items()
        if "all" in wanted or scope in wanted
        for w in ws
    ]
    unknown = wanted - set(_warmers) - {"all"}
    if unknown:
        raise KeyError(f"unknown warming scope(s): {', '.join(sorted(unknown))}")
    users = _recent_users(user_limit) if any(w.per_user for w in selected) else []
    tasks: list[Task] = []
    for registered in selected:
        for args in [(u,) for u in users] if registered.per_user else [()]:
            tasks.extend(registered.function(*args) or ())
    return tasks


def _recent_users(limit: int) -> list[Any]:
    from django.contrib.auth import get_user_model

    model = get_user_model()
    return list(
        model.objects.filter(last_login__isnull=False).order_by("-last_login")[:limit]
    )
