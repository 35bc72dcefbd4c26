"""The core never imports Django; both packages ship their type markers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import django_bridge
import jinja_fragcache


def test_the_core_never_imports_django() -> None:
    code = (
        "import sys, jinja_fragcache, jinja_fragcache.ext, jinja_fragcache.api;"
        "from jinja_fragcache import RedisBackend, CachelibBackend;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_both_packages_are_typed() -> None:
    for package in (jinja_fragcache, django_bridge):
        assert (Path(package.__file__).parent / "py.typed").exists()


def test_public_names() -> None:
    names = {
        "FragmentCacheExtension",
        "FragmentCache",
        "MemoryBackend",
        "RedisBackend",
        "RedisClusterBackend",
        "SentinelBackend",
        "CachelibBackend",
        "make_fragment_key",
        "invalidate_fragment",
        "FragmentCacheWarning",
    }
    assert all(getattr(jinja_fragcache, name) for name in names)
    assert names <= set(jinja_fragcache.__all__)
    bridge = {
        "invalidate_fragment",
        "invalidate_fragments",
        "invalidate_tags",
        "get_cache_stats",
    }
    assert all(callable(getattr(django_bridge, name)) for name in bridge)
