"""What a render sends to Redis: commands, counted by the server, and round
trips, the packets that redis-py writes, whoever the client is.

Every implementation measured here talks to Redis through redis-py
(django-redis, Django's ``RedisCache``, cachelib, our ``RedisBackend``), and
redis-py writes each command, or each pipeline, with one
``send_packed_command``: counting its calls counts round trips.  The near
cache's tracking connection (which only listens) is left out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .peers.base import Adapter


@contextmanager
def counted() -> Iterator[list[int]]:
    """Yield a one-item list that holds, once the block is left, the packets
    sent meanwhile."""
    sent = [0]
    with counted_by_port() as by_port:
        yield sent
    sent[0] = sum(by_port.values())


#: The cases whose Redis traffic the report counts, and the render of each.
COUNTED_CASES = {
    "hit": "render_hit",
    "miss": "render_miss",
    "50 siblings": "render_siblings",
    "cold 50 cards": "render_cold_cards",
}


def redis_commands(
    adapters: list[Adapter],
    redis_url: str,
    cases: dict[str, str] = COUNTED_CASES,
    renders: int = 10,
) -> dict[str, dict[str, dict[str, Any]]]:
    """What each render sends to Redis: the commands, from the server's own
    counts, and the round trips, from the packets redis-py writes:
    ``{case: {implementation: {"commands": "1 mget, 1 set", "trips": 2.0}}}``."""
    import redis

    client = redis.Redis.from_url(redis_url)

    def counts() -> dict[str, int]:
        stats = client.info("commandstats")
        return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}

    table: dict[str, dict[str, dict[str, Any]]] = {}
    for case, render in cases.items():
        table[case] = {}
        for adapter in adapters:
            before = counts()
            with counted() as packets:
                for _ in range(renders):
                    getattr(adapter, render)()
            after = counts()
            sent = [
                f"{(after[c] - before.get(c, 0)) / renders:g} {c}"
                for c in sorted(after)
                if c != "info" and after[c] != before.get(c, 0)
            ]
            table[case][adapter.name] = {
                "commands": ", ".join(sent),
                "trips": packets[0] / renders,
            }
    client.close()
    return table


@contextmanager
def counted_by_port() -> Iterator[Counter[int]]:
    """Yield a counter of the packets sent meanwhile, by the port each went
    to: on a cluster, the round trips to each node."""
    from redis import connection

    from jinja_fragcache.backends.redis import TRACKING_NAME

    sent: Counter[int] = Counter()
    cls = connection.AbstractConnection
    send: Any = cls.send_packed_command

    def counting(self: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(self, "client_name", None) != TRACKING_NAME:
            sent[int(getattr(self, "port", 0) or 0)] += 1
        return send(self, command, *args, **kwargs)

    cls.send_packed_command = counting  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        cls.send_packed_command = send  # type: ignore[method-assign]
