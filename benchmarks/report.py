"""The machine, and the results as markdown tables."""

from __future__ import annotations

import os
import platform
import statistics
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
CASES = ["hit", "miss", "uncached", "50 siblings", "cold 50 cards"]
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


def _traffic(sent: dict[str, Any] | None) -> str:
    """``1 get, 1 set; 2 round trips``, or ``none``."""
    if sent is None:
        return "—"
    trips = sent["trips"]
    if not trips and not sent["commands"]:
        return "none"
    return f"{sent['commands']}; {trips:g} round trip{'s' * (trips != 1)}"


def commands_table(
    commands: dict[str, dict[str, dict[str, Any]]], peers: list[str]
) -> list[str]:
    names = [OURS, *peers]
    lines = ["| case | " + " | ".join(names) + " |", "|" + "---|" * (1 + len(names))]
    for case, row in commands.items():
        cells = " | ".join(_traffic(row.get(n)) for n in names)
        lines.append(f"| {case} | {cells} |")
    return lines


#: How the Django table names the bridge's backend on each kind.
BRIDGE_BACKENDS = {
    "DjangoCacheBackend": "the Django cache adapter, on LocMemCache",
    "DjangoRedisBackend": "native: RedisBackend on django-redis's pool",
}
DJANGO_TAG = "django {% cache %}"


def django_table(results: dict[str, dict[str, Any]]) -> list[str]:
    """Our DTL and Jinja2 tags under Django against Django's ``{% cache %}``."""
    lines = [
        "| backend (the bridge's) | tag | hit µs | django `{% cache %}` ÷ this "
        "| hit − its engine's uncached page µs | Redis per hit |",
        "|---|---|---|---|---|---|",
    ]
    for kind, measured in results.items():
        under = measured["under django"]
        where = f"{kind} ({BRIDGE_BACKENDS.get(under['backend'], under['backend'])})"
        theirs = under["hit"][DJANGO_TAG]
        for tag, hit in under["hit"].items():
            label = tag if tag == DJANGO_TAG else f"ours: {tag}"
            sent = under.get("commands", {}).get(tag)
            lines.append(
                f"| {where} | `{label}` | {hit:.1f} | {theirs / hit:.1f}× "
                f"| {under['over uncached'][tag]:+.1f} | {_traffic(sent)} |"
            )
            where = kind
    pages = "; ".join(
        f"{kind}: DTL {m['under django']['uncached']['DTL']:.1f} µs, Jinja2 "
        f"{m['under django']['uncached']['Jinja2']:.1f} µs"
        for kind, m in results.items()
    )
    return [*lines, "", f"The uncached pages under Django: {pages}."]


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
    return lines + issue_targets(results, peers)


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def issue_targets(results: dict[str, dict[str, Any]], peers: list[str]) -> list[str]:
    """The request-path targets (issue 8), each as ours ÷ the peer."""
    lines = []
    memory = results.get("memory")
    if memory is not None:
        hits, misses = memory["hit"], memory["miss"]
        docs = hits["jinja-docs"]
        lines.append(
            f"- memory hit: ours ÷ jinja-docs = {hits[OURS] / docs:.2f} "
            f"({hits[OURS]:.1f} / {docs:.1f} µs; target ≤ 0.8: "
            f"{_verdict(hits[OURS] <= 0.8 * docs)})"
        )
        median = statistics.median(misses[p] for p in peers if p in misses)
        lines.append(
            f"- memory miss: ours ÷ the median peer = {misses[OURS] / median:.2f} "
            f"({misses[OURS]:.1f} / {median:.1f} µs; target ≤ 1.3: "
            f"{_verdict(misses[OURS] <= 1.3 * median)})"
        )
    redis = results.get("redis")
    if redis is not None:
        near = redis.get("near cache", True)
        bound = 0.25 if near else 1.0
        hits = redis["hit"]
        fastest = min((hits[p], p) for p in peers if p in hits)
        lines.append(
            f"- redis hit, near cache {'on' if near else 'off'}: ours ÷ the fastest "
            f"peer ({fastest[1]}) = {hits[OURS] / fastest[0]:.2f} ({hits[OURS]:.1f} "
            f"/ {fastest[0]:.1f} µs; target ≤ {bound:g}: "
            f"{_verdict(hits[OURS] <= bound * fastest[0])})"
        )
        misses = redis["miss"]
        fastest = min((misses[p], p) for p in peers if p in misses)
        trips = redis["commands"]["miss"][OURS]["trips"]
        lines.append(
            f"- redis miss: ours ÷ the fastest peer ({fastest[1]}) = "
            f"{misses[OURS] / fastest[0]:.2f} ({misses[OURS]:.1f} / "
            f"{fastest[0]:.1f} µs; target ≤ 1.3: "
            f"{_verdict(misses[OURS] <= 1.3 * fastest[0])}), {trips:g} round trips "
            f"(target ≤ 2: {_verdict(trips <= 2)})"
        )
        siblings = redis["50 siblings"]
        ratio = min(siblings[p] / siblings[OURS] for p in peers if p in siblings)
        lines.append(
            f"- redis 50 siblings: every peer ÷ ours ≥ {ratio:.1f} (target ≥ 10: "
            f"{_verdict(ratio >= 10)})"
        )
    return lines


def _trips_by_node(sent: dict[str, Any]) -> str:
    """``1 / 1 / 1; 3``: round trips to each node, then in all."""
    per_node = " / ".join(f"{trips:g}" for trips in sent["per node"])
    return f"{per_node}; {sent['trips']:g}"


def cluster_table(
    cluster: dict[str, Any], single: dict[str, Any], peers: list[str]
) -> list[str]:
    """Ours on the cluster, near cache on and off, against ours (the same
    near cache setting) and the peers on the single Redis.

    (×) is the peer's time on the single Redis divided by ours on the
    cluster."""
    header = (
        "| case | near cache | ours, cluster µs | round trips per node; in all "
        "| ours, one Redis µs (round trips) | "
        + " | ".join(f"{peer}, one Redis µs (×)" for peer in peers)
    )
    lines = [header + " |", "|" + "---|" * (5 + len(peers))]
    served = []
    for case, times in cluster["times"].items():
        row = single[case]
        for near, variant, one_redis in (
            ("on", "cluster", f"{row[OURS]:.1f} (main table)"),
            (
                "off",
                "cluster, near cache off",
                f"{times['one Redis, near cache off']:.1f} "
                f"({cluster['traffic'][case]['single trips']:g})",
            ),
        ):
            ours = times[variant]
            sent = cluster["traffic"][case][variant]
            cells = " | ".join(
                f"{row[p]:.1f} ({row[p] / ours:.1f}×)" if p in row else "—"
                for p in peers
            )
            lines.append(
                f"| {case} | {near} | {ours:.1f} | {_trips_by_node(sent)} "
                f"| {one_redis} | {cells} |"
            )
            served.append(f"{case}, near cache {near}: {sent['commands']}")
    return [
        *lines,
        "",
        f"Commands per page, summed over the nodes: {'; '.join(served)}.",
    ]


def cluster_section(
    cluster: dict[str, Any], single: dict[str, Any], peers: list[str]
) -> list[str]:
    ports = ", ".join(str(port) for port in cluster["ports"])
    return [
        "",
        f"On a Redis Cluster of {len(cluster['ports'])} primaries (this run's "
        f"own, on loopback ports {ports}, no replicas): our page of "
        f"{cluster['cards']} `cache_each` cards through `RedisClusterBackend`, "
        "with its near caches (one per primary) and without. The 50 cards are "
        "variants of one name, so their keys share one slot. Taking turns with "
        "them: the same pages through `RedisBackend` on the single Redis with "
        "the near cache off. The near-cache-on figure on one Redis and the peer "
        "columns are the main table's (same run, measured earlier); (×) is the "
        "peer's time on the single Redis divided by ours on the cluster.",
        "",
        *cluster_table(cluster, single, peers),
    ]


def render(
    results: dict[str, dict[str, Any]],
    peers: list[str],
    mode: str,
    cluster: dict[str, Any] | None = None,
) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"`{mode}`. Machine:",
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
        "built-in `RedisCache`. *cold 50 cards* is the 50 siblings' page "
        "with 50 ids never rendered before: every card misses.",
        "",
        *table(results, peers),
        "",
        "Redis commands per render, counted by the server (a miss renders a "
        "vary value never seen before; the commands our Lua scripts run count "
        "as well as the `evalsha` that runs them), and round trips, the packets "
        "redis-py writes (the near cache's tracking connection left out):",
        "",
        *commands_table(results["redis"]["commands"], peers),
        "",
        "Under Django: our DTL tag (`{% load cache_tags %}`) and our Jinja2 tag "
        "in Django's Jinja2 engine (`django_bridge.jinja2.environment`), both "
        "through `django_bridge` with `FRAGCACHE` on the `default` alias, "
        "against Django's `{% cache %}` on that same alias; one-fragment hits, "
        "taking turns with the two uncached pages (a hit's cost over its "
        "engine's uncached page is the median of per-round differences). "
        "`DEBUG` is off.",
        "",
        *django_table(results),
        "",
        "Invalidating every variant of a fragment on Redis, each side alone in "
        "a database holding exactly its N variants:",
        "",
        *invalidation_table(results["redis"]["invalidate all"]),
        *([] if cluster is None else cluster_section(cluster, results["redis"], peers)),
        "",
        "Targets:",
        "",
        *targets(results, peers),
    ]
    return "\n".join(lines) + "\n"
