"""Instruction counts, by callgrind: what is deterministic about speed.

Wall-clock figures belong to ``benchmarks/``; here valgrind counts the
instructions of whole processes that differ only in what they render, so
the difference is the cost of that render, the same on every run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

PROBE = textwrap.dedent(
    """
    import sys
    from jinja2 import Environment
    from jinja_fragcache import FragmentCache, FragmentCacheExtension, MemoryBackend

    env = Environment(extensions=[FragmentCacheExtension])
    env.fragment_cache = FragmentCache(MemoryBackend())
    body = "<p>" + "x" * 2000 + "</p>"
    pages = {
        "plain": "{% cache_fragment 300 plain %}" + body + "{% endcache_fragment %}",
        "holed": "{% cache_fragment 300 holed %}" + body
        + "Hello, {% nocache %}{{ user }}{% endnocache %}!{% endcache_fragment %}",
        "alone": "Hello, {{ user }}!",
    }
    templates = {name: env.from_string(source) for name, source in pages.items()}
    for template in templates.values():  # cached, and every code path warm
        for _ in range(20):
            template.render(user="alice")
    page, count = sys.argv[1], int(sys.argv[2])
    for _ in range(count if page != "none" else 0):
        templates[page].render(user="alice")
    """
)

RENDERS = 300


def _instructions(probe: Path, page: str) -> int:
    out = probe.with_name(f"callgrind.{page}.out")
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            str(probe),
            page,
            str(RENDERS),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        timeout=300,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    assert done.returncode == 0 and found, done.stderr[-2000:]
    return int(found.group(1))


@pytest.fixture(scope="module")
def per_render(tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    if shutil.which("valgrind") is None:
        pytest.fail("these tests count instructions: apt-get install valgrind")
    probe = tmp_path_factory.mktemp("callgrind") / "probe.py"
    probe.write_text(PROBE)
    pages = ["none", "plain", "holed", "alone"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        counted = pool.map(lambda page: _instructions(probe, page), pages)
        totals = dict(zip(pages, counted, strict=True))
    return {p: (totals[p] - totals["none"]) / RENDERS for p in pages[1:]}


def test_a_hit_with_a_small_hole_costs_no_more_than_the_hole_rendered_alone(
    per_render: dict[str, float],
) -> None:
    hole = per_render["holed"] - per_render["plain"]
    assert 0 < hole <= per_render["alone"], per_render
