"""Benchmark jinja-fragcache against its peers, all in one run.

    python -m benchmarks.run [--quick] [--write]

Starts a redis-server of its own on a free loopback port, measures every
implementation on an in-process cache and on that Redis (one worker process
per backend kind), and prints median microseconds with each peer's ratio to
ours (above 1: we are faster).  ``--write`` also saves ``benchmarks/results.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

OURS = "jinja-fragcache"
PEERS = ["django", "django-jinja", "flask-caching", "jinja-docs"]


@contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("benchmarks need redis-server: apt-get install redis-server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                folder,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        sys.exit("redis-server did not start")
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(10)


def machine() -> str:
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in (
            "Jinja2",
            "Django",
            "django-jinja",
            "django-redis",
            "Flask-Caching",
            "cachelib",
            "redis",
            "hiredis",
        )
    )
    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True
    ).stdout.split()[2]
    return (
        f"{cpu}, {os_cores()} cores, Python {platform.python_version()}, "
        f"Redis {redis_version.removeprefix('v=')}; {versions}"
    )


def os_cores() -> int:
    import os

    return os.cpu_count() or 0


def worker(kind: str, redis_url: str, quick: bool) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.worker",
        "--backend",
        kind,
        "--redis-url",
        redis_url,
    ]
    if quick:
        command.append("--quick")
    output = subprocess.run(command, capture_output=True, text=True, check=False)
    if output.returncode:
        sys.exit(f"worker {kind} failed:\n{output.stderr}")
    result: dict[str, Any] = json.loads(output.stdout)
    return result


def table(results: dict[str, dict[str, Any]]) -> list[str]:
    header = (
        f"| case | backend | {OURS} µs | "
        + " | ".join(f"{peer} µs (×)" for peer in PEERS)
        + " |"
    )
    lines = [header, "|" + "---|" * (3 + len(PEERS))]
    for case in ("hit", "miss", "uncached", "50 siblings"):
        for kind, measured in results.items():
            row = measured[case]
            ours = row[OURS]
            cells = [f"{row[p]:.1f} ({row[p] / ours:.1f}×)" for p in PEERS]
            lines.append(
                f"| {case} | {kind} | {ours:.1f} | " + " | ".join(cells) + " |"
            )
    return lines


def invalidation_table(measured: dict[str, dict[str, float]]) -> list[str]:
    lines = [
        "| keys present | jinja-fragcache `invalidate_all` µs "
        "| django-redis `delete_pattern` µs (×) |",
        "|---|---|---|",
    ]
    for size, row in measured.items():
        ours, theirs = row[OURS], row["django-redis"]
        lines.append(f"| {size} | {ours:.1f} | {theirs:.0f} ({theirs / ours:.0f}×) |")
    return lines


def targets(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for kind, measured in results.items():
        parts = measured["parts"]
        hit = measured["hit"][OURS]
        extra = hit - parts["page shell"] - parts["raw fetch"]
        lines.append(
            f"- {kind}: hit {hit:.1f} µs = page shell {parts['page shell']:.1f} µs "
            f"+ one raw fetch {parts['raw fetch']:.1f} µs + **{extra:.1f} µs** "
            f"(target ≤ 8 µs: {'met' if extra <= 8 else 'missed'})"
        )
    redis = results["redis"]
    fastest_hit = min(redis["hit"][p] for p in PEERS)
    lines.append(
        f"- redis hit: ours {redis['hit'][OURS]:.1f} µs, fastest peer "
        f"{fastest_hit:.1f} µs "
        f"({'met' if redis['hit'][OURS] <= fastest_hit else 'missed'}: no slower)"
    )
    slowest_ratio = min(
        redis["50 siblings"][p] / redis["50 siblings"][OURS] for p in PEERS
    )
    lines.append(
        f"- redis 50 siblings: at least {slowest_ratio:.1f}× faster than every peer "
        f"(target ≥ 10×: {'met' if slowest_ratio >= 10 else 'missed'})"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a ~30 s run")
    parser.add_argument("--write", action="store_true", help="save results.md")
    args = parser.parse_args()
    with redis_server() as url:
        results = {kind: worker(kind, url, args.quick) for kind in ("memory", "redis")}
    report = [
        "# Benchmark results",
        "",
        f"Machine: {machine()}.",
        "",
        "Median µs per page render (lower is better); (×) is the peer's time "
        "divided by ours: above 1, we are faster. memory = each library's "
        "in-process cache (LocMemCache, SimpleCache, MemoryBackend); redis = a "
        "local redis-server over TCP loopback (django-redis for Django and "
        "django-jinja).",
        "",
        *table(results),
        "",
        "Invalidating every variant of a fragment, on Redis:",
        "",
        *invalidation_table(results["redis"]["invalidate all variants"]),
        "",
        "Targets:",
        "",
        *targets(results),
    ]
    text = "\n".join(report) + "\n"
    print(text)
    if args.write:
        Path(__file__).with_name("results.md").write_text(text)


if __name__ == "__main__":
    main()
