"""Redis memory per cached fragment, measured (docs/scaling.md, "Memory per
entry").

    python3 -m benchmarks.memory            # 100,000 fragments, ~1 minute
    python3 -m benchmarks.memory 1000000    # the capacity example, ~10 minutes

Writes N ``cache_each`` cards of a 2,048-byte body through ``FragmentCache``
and ``RedisBackend`` (near cache off, timeout 300 s) into a redis-server of
its own, in pages of 1,000, and reads ``INFO memory`` before and after.
"""

from __future__ import annotations

import platform
import subprocess
import sys

import redis
from jinja2 import Environment

from jinja_fragcache import FragmentCache, FragmentCacheExtension, RedisBackend

from .redis_server import redis_server, version

BODY = "x" * 2048
PAGE = "{% cache_each 300 card p in items p %}{{ body }}{% endcache_each %}"


def _cpu() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    for line in lscpu.splitlines():
        if line.startswith("Model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def measure(count: int) -> None:
    with redis_server() as url:
        client = redis.Redis.from_url(url)
        before = int(client.info("memory")["used_memory"])
        backend = RedisBackend.from_url(url, near_cache=False)
        env = Environment(extensions=[FragmentCacheExtension])
        cache = FragmentCache(backend)
        env.fragment_cache = cache  # type: ignore[attr-defined]
        template = env.from_string(PAGE)
        for start in range(0, count, 1000):
            template.render(items=range(start, min(start + 1000, count)), body=BODY)
        memory = client.info("memory")
        growth = int(memory["used_memory"]) - before
        entry = cache.key_for("card", 0)
        stored = client.get(entry)
        assert stored is not None
        print(f"fragments: {count:,}; keys: {client.dbsize():,}")
        print(f"stored entry: {len(stored):,} bytes")
        usage = (client.memory_usage(entry), client.memory_usage(entry + ":v"))
        print(f"MEMORY USAGE of one entry / one counter: {usage[0]} / {usage[1]}")
        print(
            f"used_memory growth: {growth:,} bytes, {growth / count:,.0f} per fragment"
        )
        print(f"used_memory_rss after: {int(memory['used_memory_rss']):,} bytes")
        print(
            f"machine: {_cpu()}; Redis {version()}; Python {platform.python_version()}"
        )
        backend.close()
        client.close()


if __name__ == "__main__":
    measure(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
