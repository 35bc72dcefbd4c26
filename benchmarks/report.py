"""The machine, and the results as markdown tables."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from . import redis_server

OURS = "jinja-fragcache"
PACKAGES = [
    "Jinja2",
    "Django",
    "django-jinja",
    "django-redis",
    "Flask",
    "Flask-Caching",
    "cachelib",
    "redis",
    "hiredis",
]
CASES = ["hit", "miss", "uncached", "50 siblings"]
#: The ≤ 8 µs budget of a one-fragment hit over the shell plus one fetch.
HIT_OVERHEAD_TARGET_US = 8.0


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def machine() -> list[str]:
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in PACKAGES)
    return [
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores; "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; Redis {redis_server.version()} "
        "on TCP loopback (a server of this run's own)",
        f"- jinja-fragcache {metadata.version('jinja-fragcache')}; {versions}",
    ]


def _cell(row: dict[str, float], peer: str) -> str:
    if peer not in row:
        return "—"
    return f"{row[peer]:.1f} ({row[peer] / row[OURS]:.1f}×)"


def table(results: dict[str, dict[str, Any]], peers: list[str]) -> list[str]:
    header = f"| case | backend | {OURS} µs | " + " | ".join(
        f"{peer} µs (×)" for peer in peers
    )
    lines = [header + " |", "|" + "---|" * (3 + len(peers))]
    for case in CASES:
        for kind, measured in results.items():
            row = measured[case]
            cells = " | ".join(_cell(row, peer) for peer in peers)
            lines.append(f"| {case} | {kind} | {row[OURS]:.1f} | {cells} |")
    return lines


def commands_table(commands: dict[str, dict[str, str]], peers: list[str]) -> list[str]:
    names = [OURS, *peers]
    lines = ["| case | " + " | ".join(names) + " |", "|" + "---|" * (1 + len(names))]
    for case, row in commands.items():
        lines.append(f"| {case} | " + " | ".join(row.get(n, "—") for n in names) + " |")
    return lines


def invalidation_table(measured: dict[str, dict[str, float]]) -> list[str]:
    lines = [
        f"| keys present | {OURS} `invalidate_all` µs "
        "| django-redis `delete_pattern` µs (×) |",
        "|---|---|---|",
    ]
    for size, row in measured.items():
        ours, theirs = row[OURS], row["django-redis"]
        lines.append(
            f"| {int(size):,} | {ours:.1f} | {theirs:,.0f} ({theirs / ours:,.0f}×) |"
        )
    return lines


def targets(results: dict[str, dict[str, Any]], peers: list[str]) -> list[str]:
    lines = []
    for kind, measured in results.items():
        t = measured["target"]
        extra = t["overhead"]
        verdict = "met" if extra <= HIT_OVERHEAD_TARGET_US else "missed"
        lines.append(
            f"- {kind}: hit − (uncached page + one raw fetch) = **{extra:+.1f} µs** "
            f"(target ≤ {HIT_OVERHEAD_TARGET_US:.0f} µs: {verdict}); medians: hit "
            f"{t['hit']:.1f} µs, uncached page {t['shell']:.1f} µs, raw fetch "
            f"{t['fetch']:.1f} µs"
        )
    for kind, measured in results.items():
        h = measured["hole"]
        verdict = "met" if h["overhead"] <= 0 else "missed"
        lines.append(
            f"- {kind}: hit with one small hole − (plain hit + the hole's content "
            f"rendered alone) = **{h['overhead']:+.1f} µs** (target ≤ 0: "
            f"{verdict}); medians: plain hit {h['hit']:.1f} µs, with the hole "
            f"{h['hit with hole']:.1f} µs, the hole alone {h['hole alone']:.1f} µs"
        )
    redis = results.get("redis")
    if redis is not None:
        hits = redis["hit"]
        fastest = min((hits[p], p) for p in peers if p in hits)
        verdict = "met" if hits[OURS] <= fastest[0] else "missed"
        lines.append(
            f"- redis hit: ours {hits[OURS]:.1f} µs, fastest peer {fastest[1]} "
            f"{fastest[0]:.1f} µs (no slower than any peer: {verdict})"
        )
        siblings = redis["50 siblings"]
        ratio = min(siblings[p] / siblings[OURS] for p in peers if p in siblings)
        verdict = "met" if ratio >= 10 else "missed"
        lines.append(
            f"- redis 50 siblings: {ratio:.1f}× faster than the fastest peer "
            f"(target ≥ 10×: {verdict})"
        )
    return lines


def render(results: dict[str, dict[str, Any]], peers: list[str], mode: str) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"`python -m benchmarks.run{mode}`. Machine:",
        "",
        *machine(),
        "",
        "Median µs per page render, lower is better. (×) is the peer's time "
        "divided by ours: above 1, we are faster. *memory* is each library's "
        "in-process cache (MemoryBackend; LocMemCache for Django and "
        "django-jinja; SimpleCache for Flask-Caching and the Jinja docs' "
        "example). *redis* is django-redis for Django and django-jinja, "
        "Flask-Caching's RedisCache, cachelib's RedisCache for the Jinja docs' "
        "example, and, in the last column, Django's {% cache %} on Django's "
        "built-in `RedisCache`.",
        "",
        *table(results, peers),
        "",
        "Redis commands per render, counted by the server (a miss renders a "
        "vary value never seen before):",
        "",
        *commands_table(results["redis"]["commands"], peers),
        "",
        "Invalidating every variant of a fragment on Redis, each side alone in "
        "a database holding exactly its N variants:",
        "",
        *invalidation_table(results["redis"]["invalidate all"]),
        "",
        "Targets:",
        "",
        *targets(results, peers),
    ]
    return "\n".join(lines) + "\n"
