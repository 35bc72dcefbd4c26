"""Python bytecodes per render, by function: run by hand.

    python -m benchmarks.opcodes [--case miss] [--top 40] [--peer django-jinja]
                                 [--redis redis://127.0.0.1:PORT/0]

On the in-process miss, wall time follows the bytecodes the interpreter
runs more closely than callgrind's instructions do: compiled with mypyc,
the miss ran 18 % fewer instructions and only 4.5 % less wall time, and
callgrind's branch simulation puts about twice django-jinja's mispredicted
branches in our eval loop.  This counts, with ``sys.settrace``'s opcode
events, the bytecodes each function runs per render of the benchmark's
one-fragment page (in-process caches; a miss renders a vary value never
rendered before), for us and one peer, after the same warm-up.  The
counts are the same on every run: a change that takes work off the
request path shows here whatever the machine is doing.
"""

from __future__ import annotations

import argparse
import collections
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from . import django_settings, peers

WARM = 300
RENDERS = 200

Where = tuple[str, int, str]


def count(render: Callable[[], object], renders: int) -> collections.Counter[Where]:
    """The bytecodes each function runs in *renders* calls of *render*,
    keyed by (file, first line, name)."""
    counts: collections.Counter[Where] = collections.Counter()

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            counts[(code.co_filename, code.co_firstlineno, code.co_name)] += 1
        return trace

    sys.settrace(trace)
    try:
        for _ in range(renders):
            render()
    finally:
        sys.settrace(None)
    return counts


def _shown(path: str) -> str:
    """*path* from its package on: ``jinja_fragcache/miss.py``."""
    for start in ("site-packages/", f"{Path.cwd()}/", "/lib/"):
        if start in path:
            return path.split(start)[-1]
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", default="miss", choices=["miss", "hit", "uncached"])
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--peer", default="django-jinja")
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="count the Redis case on this server (its keys are the "
        "benchmark's; FRAGCACHE_BENCH_NEAR_CACHE=0 turns our near cache off)",
    )
    args = parser.parse_args()
    kind = "memory" if args.redis is None else "redis"
    url = args.redis or "redis://127.0.0.1:1/0"  # not used in memory
    django_settings.configure(kind, url)
    wanted = ("jinja-fragcache", args.peer)
    adapters = [a for a in peers.adapters(kind, url) if a.name in wanted]
    for adapter in adapters:
        adapter.setup()
        render = getattr(adapter, f"render_{args.case}")
        for _ in range(WARM):
            render()
        counts = count(render, RENDERS)
        total = sum(counts.values()) / RENDERS
        print(f"\n{adapter.name}, {args.case}: {total:.0f} bytecodes per render")
        for (path, line, name), n in counts.most_common(args.top):
            print(f"{n / RENDERS:8.1f}  {_shown(path)}:{line} {name}")


if __name__ == "__main__":
    main()
