"""Instructions the Redis server spends per render, counted by callgrind.

    python -m benchmarks.server_instructions [--renders N]

Wall time on a loaded VM moves with its phases; the server's instructions
do not.  This starts a redis-server of its own under ``valgrind
--tool=callgrind``, renders each page a few times, zeroes the server's
counters (``callgrind_control -z``), renders it *N* times, dumps them
(``callgrind_control -d``) and divides: the whole request is counted
(event loop, parsing, scripts, replies).  Ours runs with the near cache
off for the hits (with it, a warm hit sends nothing), and both ways for
a miss (a vary value never rendered before, every time); the Jinja docs'
example sends one ``GET`` per fragment, and a ``SET`` after a miss, as
every peer does.  Needs ``valgrind`` (with ``callgrind_control``) and
``redis-server``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from . import redis_server
from .peers import ours
from .peers.base import Adapter
from .peers.jinja_docs import JinjaDocsExample

#: Warm-up renders before counting: connections open, scripts loaded, and
#: the first hit's judgement made (the next ones confirm it).
WARM = 20


def _counted(pid: int, dumps: Path, render: Callable[[], object], n: int) -> float:
    """The server's instructions per call of *render*, over *n* calls."""
    for _ in range(WARM):
        render()
    subprocess.run(
        ["callgrind_control", "-z", str(pid)], check=True, capture_output=True
    )
    for _ in range(n):
        render()
    before = set(dumps.iterdir())
    subprocess.run(
        ["callgrind_control", "-d", str(pid)], check=True, capture_output=True
    )
    (dump,) = set(dumps.iterdir()) - before
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1]) / n
    raise SystemExit(f"no total in {dump}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--renders", type=int, default=300, help="renders counted")
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed: apt-get install valgrind")
    with tempfile.TemporaryDirectory(prefix="fragcache-callgrind-") as folder:
        dumps = Path(folder)
        under = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dumps}/%p"]
        with redis_server.started_server(under, 60) as (url, pid):
            # Ours with its near cache, made first (set up reads the
            # switch), with keys of its own.
            ours.NEAR_CACHE = True
            near = ours.Ours("redis", url)
            near.prefix = "near"
            near.setup()
            ours.NEAR_CACHE = False
            adapters: list[Adapter] = [
                ours.Ours("redis", url),
                JinjaDocsExample("redis", url),
            ]
            for adapter in adapters:
                adapter.setup()
            print("| page | " + " | ".join(a.name for a in adapters) + " |")
            print("|---|" + "---|" * len(adapters))
            for page, count in (
                ("hit", args.renders),
                ("50 siblings", args.renders // 10),
                ("miss", args.renders),
            ):
                cells = [
                    f"{_counted(pid, dumps, _page(adapter, page), count):,.0f}"
                    for adapter in adapters
                ]
                print(f"| {page} | " + " | ".join(cells) + " |")
            miss = _counted(pid, dumps, near.render_miss, args.renders)
            print(f"| miss, near cache on | {miss:,.0f} | |")
            for adapter in (*adapters, near):
                adapter.teardown()


def _page(adapter: Adapter, page: str) -> Callable[[], object]:
    return {
        "hit": adapter.render_hit,
        "50 siblings": adapter.render_siblings,
        "miss": adapter.render_miss,
    }[page]


if __name__ == "__main__":
    main()
