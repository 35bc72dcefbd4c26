"""What ``manage.py warm_cache`` warms on this site."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django_bridge.warming import Task, warmer


@warmer("homepage")
def homepage() -> Iterator[Task]:
    yield "/home/"
    yield "/cards/"


@warmer("users", per_user=True)
def dashboards(user: Any) -> Iterator[Task]:
    yield ("/dashboard/", user)
