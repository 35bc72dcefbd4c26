"""Our 50-card ``cache_each`` page on a Redis Cluster; print the results as JSON.

``benchmarks.run`` starts one of these with the ports of the cluster it
started (three primaries) and the URL of its single Redis.  The page is the
main table's *50 siblings* (warm: every card a hit) and *cold 50 cards*
(every card a miss), rendered through ``RedisClusterBackend`` with its near
caches (one per primary) and without.  Taking turns with them, the same
pages through ``RedisBackend`` on the single Redis with the near cache off:
what the cluster costs over one server, each hit read from the server.

All 50 cards are variants of one name, so their keys share one hash slot:
the page reads one node (and none when the near cache holds it all).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from .django_settings import RENDER_DB
from .peers.base import CARDS, ITEMS, Adapter, cards_html, fresh_items
from .peers.ours import Ours
from .redis_server import db_url
from .traffic import counted, counted_by_port

#: The cases, the render of each.
CASES = {"50 siblings": "render_siblings", "cold 50 cards": "render_cold_cards"}
CLUSTER = "cluster"
CLUSTER_PLAIN = "cluster, near cache off"
SINGLE = "one Redis, near cache off"


class OursOnCluster(Ours):
    """Our pages through ``RedisClusterBackend``, discovered from one node."""

    near_cache = True

    def make_backend(self) -> Any:
        from jinja_fragcache.backends.cluster import RedisClusterBackend

        return RedisClusterBackend.from_url(self.redis_url, near_cache=self.near_cache)


class OursOnClusterNearCacheOff(OursOnCluster):
    """The same, every hit read from the nodes; a prefix of its own."""

    near_cache = False
    prefix = "bench-cluster-plain"


class OursNearCacheOff(Ours):
    """Our pages through ``RedisBackend`` without its near cache.

    A prefix of its own: the redis worker drew the same fresh ids, with
    ``bench``, on this same server."""

    prefix = "bench-cluster-reference"

    def make_backend(self) -> Any:
        from jinja_fragcache import RedisBackend

        return RedisBackend.from_url(self.redis_url, near_cache=False)


def check_same_html(adapter: Adapter) -> None:
    adapter.render_siblings()  # cached: the warm case's hits
    assert adapter.render_siblings() == cards_html(ITEMS), adapter.name
    items = fresh_items()
    assert adapter.render_cold_cards(items) == cards_html(items), adapter.name


def node_commands(ports: list[int]) -> Callable[[], dict[str, int]]:
    """A function giving the commands the nodes served so far, summed over
    them (``INFO commandstats``; what a Lua script runs counts too)."""
    import redis

    clients = [redis.Redis(host="127.0.0.1", port=port) for port in ports]

    def counts() -> dict[str, int]:
        total: dict[str, int] = {}
        for client in clients:
            for name, stats in client.info("commandstats").items():
                name = name.removeprefix("cmdstat_")
                total[name] = total.get(name, 0) + int(stats["calls"])
        return total

    return counts


def traffic(
    clusters: dict[str, Adapter], single: Adapter, ports: list[int], renders: int = 10
) -> dict[str, dict[str, Any]]:
    """Per render, for each case and each of *clusters*: the round trips to
    each node and in all, the commands the nodes served; and the single
    Redis's round trips."""
    counts = node_commands(ports)
    table: dict[str, dict[str, Any]] = {}
    for case, render in CASES.items():
        row: dict[str, Any] = {}
        for variant, cluster in clusters.items():
            before = counts()
            with counted_by_port() as by_port:
                for _ in range(renders):
                    getattr(cluster, render)()
            after = counts()
            served = [
                f"{(after[c] - before.get(c, 0)) / renders:g} {c}"
                for c in sorted(after)
                if c != "info" and after[c] != before.get(c, 0)
            ]
            row[variant] = {
                "per node": [by_port[port] / renders for port in ports],
                "trips": sum(by_port.values()) / renders,
                "commands": ", ".join(served) or "none",
            }
        with counted() as single_packets:
            for _ in range(renders):
                getattr(single, render)()
        row["single trips"] = single_packets[0] / renders
        table[case] = row
    return table


def measure(ports: list[int], redis_url: str, plan: Any) -> dict[str, Any]:
    url = f"redis://127.0.0.1:{ports[0]}"
    clusters: dict[str, Adapter] = {
        CLUSTER: OursOnCluster(CLUSTER, url),
        CLUSTER_PLAIN: OursOnClusterNearCacheOff(CLUSTER_PLAIN, url),
    }
    single = OursNearCacheOff("redis", db_url(redis_url, RENDER_DB))
    adapters = [*clusters.values(), single]
    for adapter in adapters:
        adapter.setup()
    try:
        for adapter in adapters:
            check_same_html(adapter)
        times = {
            case: plan.compare(
                {
                    **{name: getattr(a, render) for name, a in clusters.items()},
                    SINGLE: getattr(single, render),
                }
            )
            for case, render in CASES.items()
        }
        sent = traffic(clusters, single, ports)
    finally:
        for adapter in adapters:
            adapter.teardown()
    return {"ports": ports, "cards": CARDS, "times": times, "traffic": sent}


def main() -> None:
    from .worker import Plan

    parser = argparse.ArgumentParser()
    parser.add_argument("--ports", required=True, help="the primaries: P1,P2,P3")
    parser.add_argument("--redis-url", required=True, help="redis://host:port")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    ports = [int(port) for port in args.ports.split(",")]
    print(json.dumps(measure(ports, args.redis_url, Plan(args.quick))))


if __name__ == "__main__":
    main()
