"""Benchmark jinja-fragcache against its peers, all in one run.

    python -m benchmarks.run [--quick] [--write]

Starts a redis-server of its own on a free loopback port, measures every
implementation on an in-process cache and on that Redis (one worker process
per backend kind), and prints median microseconds with each peer's ratio to
ours.  ``--write`` also saves ``benchmarks/results.md`` (with
``FRAGCACHE_BENCH_NEAR_CACHE=0``, ``benchmarks/results-near-cache-off.md``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import peers, report
from .peers.ours import NEAR_CACHE
from .redis_server import redis_server

KINDS = ["memory", "redis"]


def run_worker(kind: str, redis_url: str, quick: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.worker", "--backend", kind]
    command += ["--redis-url", redis_url] + (["--quick"] if quick else [])
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,  # where -m finds benchmarks
    )
    if done.returncode:
        sys.exit(f"the {kind} worker failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Benchmark jinja-fragcache against its peers."
    )
    parser.add_argument("--quick", action="store_true", help="a ~20 s, noisier run")
    parser.add_argument(
        "--write", action="store_true", help="also write benchmarks/results.md"
    )
    args = parser.parse_args()
    started = time.monotonic()
    with redis_server() as url:
        results = {}
        for kind in KINDS:
            print(f"measuring {kind}...", file=sys.stderr, flush=True)
            results[kind] = run_worker(kind, url, args.quick)
    command = "python -m benchmarks.run" + (" --quick" if args.quick else "")
    if not NEAR_CACHE:
        command = "FRAGCACHE_BENCH_NEAR_CACHE=0 " + command
    text = report.render(results, peers.names()[1:], command)
    print(text)
    print(f"({time.monotonic() - started:.0f} s)", file=sys.stderr)
    if args.write:
        name = "results.md" if NEAR_CACHE else "results-near-cache-off.md"
        Path(__file__).with_name(name).write_text(text)


if __name__ == "__main__":
    main()
