"""Client instructions per Redis hit, counted by callgrind: run by hand.

    python -m benchmarks.hit_instructions redis://127.0.0.1:6479/0 [--hits N]

For ours with the near cache off and for the Jinja docs' example (one
``GET``), two processes under ``valgrind --tool=callgrind``
(``PYTHONHASHSEED=0``) differ only in how many hits of the benchmark's
one-fragment page they render; the difference, per hit, is the client's
cost of a hit, page included.  The server's side is
:mod:`benchmarks.server_instructions`.  Give it a redis-server of its own
or one whose ``bench`` and ``docs:`` keys may be written: nothing is
flushed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(ROOT)}

PROBE = textwrap.dedent(
    """
    import sys
    from benchmarks.peers import ours
    from benchmarks.peers.jinja_docs import JinjaDocsExample

    url, which, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ours.NEAR_CACHE = False
    adapter = ours.Ours("redis", url) if which == "ours" else JinjaDocsExample(
        "redis", url
    )
    adapter.setup()
    for _ in range(50):  # connections, scripts, the first judgement: all warm
        adapter.render_hit()
    for _ in range(count):
        adapter.render_hit()
    adapter.teardown()
    """
)


def instructions(probe: str, url: str, which: str, count: int) -> int:
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={folder}/callgrind.out",
                sys.executable,
                probe,
                url,
                which,
                str(count),
            ],
            capture_output=True,
            text=True,
            check=False,
            env=ENV,
            timeout=900,
        )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or not found:
        raise SystemExit(done.stderr[-3000:])
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--hits", type=int, default=300)
    options = parser.parse_args()
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as file:
        file.write(PROBE)
    try:
        for which in ("ours", "docs"):
            base = instructions(file.name, options.url, which, 0)
            more = instructions(file.name, options.url, which, options.hits)
            per_hit = (more - base) / options.hits
            name = "jinja-fragcache, near cache off" if which == "ours" else which
            print(f"{name}: {per_hit:,.0f} instructions a hit")
    finally:
        os.unlink(file.name)


if __name__ == "__main__":
    main()
