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
import textwrap

from .callgrind import instructions, probe

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--hits", type=int, default=300)
    options = parser.parse_args()
    with probe(PROBE) as script:
        for which in ("ours", "docs"):
            base = instructions(script, options.url, which, "0")
            more = instructions(script, options.url, which, str(options.hits))
            per_hit = (more - base) / options.hits
            name = "jinja-fragcache, near cache off" if which == "ours" else which
            print(f"{name}: {per_hit:,.0f} instructions a hit")


if __name__ == "__main__":
    main()
