"""One import surface: every public helper of the Django side comes from
``django_bridge``, lazily, typed, and the same object as its submodule's."""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import django_bridge

from .support import ROOT

#: The public helpers, and the submodule each has always lived in.
HELPERS = {
    "cache_view": "views",
    "cache_view_per_user": "views",
    "cache_view_per_tenant": "views",
    "cache_api_response": "views",
    "cache_api_list": "views",
    "invalidate_view_cache": "views",
    "etag_support": "conditional",
    "last_modified_support": "conditional",
    "condition_support": "conditional",
    "warm_cache": "warming",
    "warm_cache_batch": "warming",
    "warm_url": "warming",
    "warmer": "warming",
    "invalidate_fragment": "api",
    "invalidate_fragments": "api",
    "invalidate_tags": "api",
    "invalidate_on_save": "api",
    "get_cache_stats": "api",
    "get_fragment_cache": "cache",
    "metrics_view": "metrics",
}


def run(code: str, **env: str) -> str:
    """Run *code* in a fresh interpreter without DJANGO_SETTINGS_MODULE
    unless *env* gives one; return what it prints."""
    environ = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**environ, "PYTHONPATH": str(ROOT), **env},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_every_helper_is_the_submodules_own() -> None:
    for name, home in HELPERS.items():
        module = importlib.import_module(f"django_bridge.{home}")
        assert getattr(django_bridge, name) is getattr(module, name), name


def test_all_and_dir_list_every_helper() -> None:
    assert sorted(django_bridge.__all__) == sorted(HELPERS)
    assert set(HELPERS) <= set(dir(django_bridge))


def test_star_import_gives_every_helper() -> None:
    namespace: dict[str, object] = {}
    exec("from django_bridge import *", namespace)
    assert set(HELPERS) <= set(namespace)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="cache_fragment"):
        django_bridge.cache_fragment  # type: ignore[attr-defined]  # noqa: B018


def test_importing_touches_neither_settings_nor_the_app_registry() -> None:
    code = (
        "import json, sys, django_bridge\n"
        "from django.conf import settings\n"
        "from django.apps import apps\n"
        "print(json.dumps({\n"
        "  'configured': settings.configured,\n"
        "  'ready': apps.ready,\n"
        "  'names': sorted(dir(django_bridge)),\n"
        "  'loaded': sorted(m for m in sys.modules if m.startswith('django_bridge.')),\n"
        "}))"
    )
    found = json.loads(run(code))
    assert found["configured"] is False and found["ready"] is False
    assert found["loaded"] == []  # no submodule yet: every name waits for its use
    assert set(HELPERS) <= set(found["names"])


def test_every_helper_imports_flat_after_setup() -> None:
    names = ", ".join(sorted(HELPERS))
    code = (
        "import django\n"
        "django.setup()\n"
        f"from django_bridge import {names}\n"
        f"print(all(callable(f) for f in ({names},)))"
    )
    assert run(code, DJANGO_SETTINGS_MODULE="tests.django_settings").strip() == "True"


def test_mypy_sees_every_helper() -> None:
    # The TYPE_CHECKING block must import each name from its own submodule:
    # otherwise mypy reads them through __getattr__ as Any.
    source = Path(django_bridge.__file__).read_text()
    typed: dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING"
        ):
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom) and statement.level == 1
                for alias in statement.names:
                    typed[alias.name] = str(statement.module)
    assert typed == HELPERS
