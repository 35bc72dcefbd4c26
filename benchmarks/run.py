"""Benchmark jinja-fragcache against its peers, all in one run.

    python -m benchmarks.run [--quick] [--write]

Starts a redis-server of its own on a free loopback port, measures every
implementation on an in-process cache and on that Redis (one worker process
per backend kind), then starts a three-primary Redis Cluster of its own and
measures our 50-card page on it (``on_cluster``), and prints median
microseconds with each peer's ratio to ours.  ``--write`` also saves
``benchmarks/results.md`` (with ``FRAGCACHE_BENCH_NEAR_CACHE=0``,
``benchmarks/results-near-cache-off.md``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import peers, redis_cluster, report
from .peers.ours import NEAR_CACHE
from .redis_server import redis_server

KINDS = ["memory", "redis"]


def run_worker(kind: str, redis_url: str, quick: bool) -> dict[str, Any]:
    return run_module("benchmarks.worker", kind, redis_url, quick, "--backend", kind)


def run_cluster_worker(ports: list[int], redis_url: str, quick: bool) -> dict[str, Any]:
    joined = ",".join(map(str, ports))
    return run_module(
        "benchmarks.on_cluster", "cluster", redis_url, quick, "--ports", joined
    )


def run_module(
    module: str, what: str, redis_url: str, quick: bool, *options: str
) -> dict[str, Any]:
    """Run one worker process; the JSON it prints."""
    command = [sys.executable, "-m", module, *options]
    command += ["--redis-url", redis_url] + (["--quick"] if quick else [])
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,  # where -m finds benchmarks
    )
    if done.returncode:
        sys.exit(f"the {what} worker failed:\n{done.stderr}")
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
    redis_cluster.check_installed()  # now, not after the other workers
    with redis_server() as url:
        results = {}
        for kind in KINDS:
            print(f"measuring {kind}...", file=sys.stderr, flush=True)
            results[kind] = run_worker(kind, url, args.quick)
        # Started only now: its nodes' gossip stays out of the other timings.
        print("measuring cluster...", file=sys.stderr, flush=True)
        with redis_cluster.redis_cluster() as ports:
            cluster = run_cluster_worker(ports, url, args.quick)
    command = "python -m benchmarks.run" + (" --quick" if args.quick else "")
    if not NEAR_CACHE:
        command = "FRAGCACHE_BENCH_NEAR_CACHE=0 " + command
    text = report.render(results, peers.names()[1:], command, cluster)
    print(text)
    print(f"({time.monotonic() - started:.0f} s)", file=sys.stderr)
    if args.write:
        name = "results.md" if NEAR_CACHE else "results-near-cache-off.md"
        Path(__file__).with_name(name).write_text(text)


if __name__ == "__main__":
    main()
