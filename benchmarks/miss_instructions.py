"""Instructions per Redis miss, counted by callgrind: run by hand.

    python -m benchmarks.miss_instructions redis://127.0.0.1:6479/0 [--near-off]

Two processes under ``valgrind --tool=callgrind`` (``PYTHONHASHSEED=0``)
differ only in how many misses they render (the benchmark's one-fragment
page, a vary value never rendered before each time); the difference, per
miss, is the client's cost of a miss, the tracking thread's included (each
process waits for the messages on their way and applies them before it
ends).  The server's output bytes per miss (``INFO stats``,
``total_net_output_bytes``) are measured without valgrind.  Give it a
redis-server of its own: keys go under a fresh prefix, nothing is flushed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
import uuid

from .callgrind import ENV, instructions, probe

PROBE = textwrap.dedent(
    """
    import sys, time
    from jinja2 import Environment
    from jinja_fragcache import FragmentCache, FragmentCacheExtension, RedisBackend
    from benchmarks.peers.base import BODY, FRAGMENT, SHELL

    url, prefix = sys.argv[1], sys.argv[2]
    near, count = sys.argv[3] == "1", int(sys.argv[4])
    backend = RedisBackend.from_url(url, near_cache=near)
    env = Environment(extensions=[FragmentCacheExtension])
    env.fragment_cache = FragmentCache(backend, prefix=prefix)
    tag = "{% cache_fragment 300 frag uid %}" + FRAGMENT + "{% endcache_fragment %}"
    page = env.from_string(SHELL.format(tag))
    uid = 0

    def settle():
        # What is on its way arrives; a read applies it.
        time.sleep(0.3)
        backend.get_many([prefix + ":2:f:settle"])

    for _ in range(50):  # connections, scripts, tracking: all warm
        uid += 1
        page.render(uid=uid, body=BODY)
    deadline = time.monotonic() + 10
    while near and not backend.near.active and time.monotonic() < deadline:
        time.sleep(0.01)
    for _ in range(50):
        uid += 1
        page.render(uid=uid, body=BODY)
    settle()
    for _ in range(count):
        uid += 1
        page.render(uid=uid, body=BODY)
    settle()
    backend.close()
    """
)


def _instructions(script: str, url: str, near: bool, count: int) -> int:
    prefix = "m" + uuid.uuid4().hex[:10]
    return instructions(script, url, prefix, "1" if near else "0", str(count))


def output_bytes(script: str, url: str, near: bool, count: int) -> float:
    import redis

    client = redis.Redis.from_url(url)
    try:

        def sent() -> int:
            return int(client.info("stats")["total_net_output_bytes"])

        before = sent()
        subprocess.run(
            [sys.executable, script, url, "b" + uuid.uuid4().hex[:10]]
            + ["1" if near else "0", "0"],
            check=True,
            env=ENV,
        )
        empty = sent() - before
        before = sent()
        subprocess.run(
            [sys.executable, script, url, "b" + uuid.uuid4().hex[:10]]
            + ["1" if near else "0", str(count)],
            check=True,
            env=ENV,
        )
        return (sent() - before - empty) / count
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--near-off", action="store_true")
    parser.add_argument("--misses", type=int, default=200)
    options = parser.parse_args()
    near = not options.near_off
    with probe(PROBE) as script:
        base = _instructions(script, options.url, near, 0)
        more = _instructions(script, options.url, near, options.misses)
        per_miss = (more - base) / options.misses
        state = "on" if near else "off"
        print(f"near cache {state}: {per_miss:,.0f} instructions a miss")
        per_byte = output_bytes(script, options.url, near, options.misses)
        print(f"server output: {per_byte:,.0f} bytes a miss")


if __name__ == "__main__":
    main()
