"""The near cache on a Redis Cluster: one per primary, each kept coherent by
a tracking connection to its node (:mod:`jinja_fragcache.backends.cluster_near`),
on a real three-primary cluster of this module's own.

The rules are those of the near cache on one Redis (``test_near_cache``):
a warm hit costs no round trip, this process sees its own invalidation on
its very next render, another process's 50 ms after it returned, a killed
tracking connection empties and bypasses that node's near cache (no stale
render follows), and each stays within its bytes.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest

from jinja_fragcache.backends.cluster import RedisClusterBackend
from jinja_fragcache.backends.redis import TRACKING_NAME
from jinja_fragcache.keys import name_version_key, variant_version_key

from .support import packets, redis_on, wait_until
from .test_cluster import SETUP, Cluster, Site, cluster

__all__ = ["cluster"]  # the module's cluster, started by the fixture


@pytest.fixture
def site(cluster: Cluster, enable_async: bool) -> Iterator[Site]:
    backend = RedisClusterBackend.from_url(cluster.url, name_shards=1)
    made = Site(backend, enable_async, cluster, lock_wait=0.5)
    yield made
    made.close()
    backend.close()


def _traffic(sent: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    return [(port, command) for port, command in sent if command not in SETUP]


def warm(site: Site) -> None:
    """Render until a render of the page sends nothing at all: our own
    writes' echoes arrive a moment after the writes."""
    for _ in range(200):
        with packets() as sent:
            assert site.render() == site.expected
        if not _traffic(sent):
            return
        time.sleep(0.01)
    pytest.fail("the near caches never warmed")


def nears(site: Site) -> dict[str, Any]:
    assert site.backend.near is not None
    return site.backend.near.nodes


def test_a_warm_page_over_every_primary_costs_no_round_trip(
    site: Site, cluster: Cluster
) -> None:
    site.render()
    warm(site)
    site.renders.clear()
    for _ in range(3):
        with packets() as sent:
            assert site.render() == site.expected
        assert _traffic(sent) == []
    assert site.renders == {}
    # A near cache per primary, each tracking its own node and holding keys.
    held = nears(site)
    assert len(held) == len(cluster.ports)
    assert all(near.active and len(near) for near in held.values())


def test_this_process_sees_its_own_invalidation_on_the_next_render(
    site: Site,
) -> None:
    site.render()
    for round_, name in enumerate(site.names * 2):
        warm(site)
        site.renders.clear()
        if round_ % 2:
            assert site.cache.invalidate(name, site.names.index(name))
            expected = {site.names.index(name): 1}
        else:
            assert site.cache.invalidate_all(name)
            expected = dict.fromkeys(range(site.names.index(name), 50, 3), 1)
        # The write itself dropped the local copy before it returned,
        # whatever the server's echo does later.
        counters = [name_version_key(name, prefix=site.prefix)]
        if round_ % 2:
            key = site.cache.key_for(name, site.names.index(name))
            counters = [variant_version_key(key)]
        assert all(
            near.peek(counter) is None
            for near in nears(site).values()
            for counter in counters
        )
        # No pause: the very next render is new, whichever node it is on.
        assert site.render() == site.expected
        assert site.renders == expected


OTHER_PROCESS = """
import sys
from jinja_fragcache import FragmentCache
from jinja_fragcache.backends.cluster import RedisClusterBackend
backend = RedisClusterBackend.from_url({url!r}, name_shards=1)
cache = FragmentCache(backend, prefix={prefix!r})
for name in sys.stdin:
    assert cache.invalidate_all(name.strip())
    print("done", flush=True)
"""


def test_another_process_invalidation_shows_50_ms_after_it_returned(
    site: Site, cluster: Cluster
) -> None:
    source = OTHER_PROCESS.format(url=cluster.url, prefix=site.prefix)
    other = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(source)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert other.stdin is not None and other.stdout is not None
    try:
        site.render()
        for name in site.names * 2:
            warm(site)  # hits make no round trip
            site.renders.clear()
            other.stdin.write(name + "\n")
            other.stdin.flush()
            assert other.stdout.readline().strip() == "done"
            time.sleep(0.05)
            assert site.render() == site.expected
            first = site.names.index(name)
            assert site.renders == dict.fromkeys(range(first, 50, 3), 1)
    finally:
        other.stdin.close()
        other.wait(10)
        other.stdout.close()


def _trackers(port: int) -> list[dict[str, Any]]:
    return [c for c in redis_on(port).client_list() if c["name"] == TRACKING_NAME]


def test_a_killed_tracking_connection_empties_that_node_and_nothing_stale_follows(
    site: Site, cluster: Cluster
) -> None:
    site.render()
    for round_ in range(2):
        warm(site)
        name = site.names[round_]
        port = cluster.ports[round_]
        held = nears(site)
        sessions = {node: near.sessions for node, near in held.items()}
        for tracker in _trackers(port):
            redis_on(port).client_kill_filter(_id=tracker["id"])
        # An invalidation while nobody tracks that node: its message is lost.
        counter = name_version_key(name, prefix=site.prefix)
        assert redis_on(port).incr(counter)
        site.renders.clear()
        assert site.render() == site.expected
        assert site.renders == dict.fromkeys(range(round_, 50, 3), 1)
        # That node's near cache starts a new session; the others never
        # stopped.
        node = next(n for n in held if n.endswith(f":{port}"))
        wait_until(
            lambda near=held[node], before=sessions[node]: near.sessions == before + 1,
            "a new session",
            5,
        )
        assert all(
            near.sessions == sessions[other]
            for other, near in held.items()
            if other != node
        )
        warm(site)


def test_each_nodes_near_cache_stays_within_its_bytes_under_churn(
    cluster: Cluster, enable_async: bool
) -> None:
    backend = RedisClusterBackend.from_url(
        cluster.url, near_cache_bytes=20_000, name_shards=1
    )
    site = Site(backend, enable_async, cluster, lock_wait=0.5)
    try:
        for round_ in range(6):
            page = "".join(
                f"{{% cache_each 300 {name} p in products p.id {round_} %}}"
                f"{{{{ 'x' * 300 }}}}{{% endcache_each %}}"
                for name in site.names
            )
            site.render(page)
            site.render(page)
            for near in nears(site).values():
                assert near.size <= 20_000
        assert all(len(near) for near in nears(site).values())
    finally:
        site.close()
        backend.close()


def _start_moving(cluster: Cluster, slot: int, source: int, target: int) -> Any:
    """Reshard one slot the way ``redis-cli --cluster reshard`` does, up to
    its last step: IMPORTING, MIGRATING, every key MIGRATEd.  Reads of the
    slot at *source* answer ``ASK`` now.  Returns the target's node id."""
    ids = {
        port: redis_on(port).execute_command("CLUSTER", "MYID")
        for port in cluster.ports
    }
    redis_on(target).execute_command(
        "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source]
    )
    redis_on(source).execute_command(
        "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target]
    )
    while keys := redis_on(source).execute_command(
        "CLUSTER", "GETKEYSINSLOT", slot, 100
    ):
        redis_on(source).execute_command(
            "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys
        )
    return ids[target]


def _finish_moving(cluster: Cluster, slot: int, target_id: Any) -> None:
    for port in cluster.ports:
        redis_on(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    cluster.ranges.clear()  # owner() reads the slot map again


def _incr_on_importing(port: int, key: str) -> None:
    """Another client's write at the node a slot is moving to (``ASKING``)."""
    pipe = redis_on(port).pipeline(transaction=False)
    pipe.execute_command("ASKING")
    pipe.incr(key)
    assert pipe.execute()[1]


def test_a_resharded_slot_keeps_hitting_and_stays_coherent(
    site: Site, cluster: Cluster
) -> None:
    from redis.crc import key_slot

    name = site.names[0]
    source, target = cluster.ports[0], cluster.ports[1]
    slot = key_slot(site.cache.key_for(name, 0).encode())
    counter = name_version_key(name, prefix=site.prefix)
    cards = dict.fromkeys(range(0, 50, 3), 1)
    site.render()
    warm(site)
    target_id = _start_moving(cluster, slot, source, target)
    try:
        # Mid-move: a script of several keys of the slot (every lookup's
        # first read) answers TRYAGAIN at the new node, so that name's
        # fragments render uncached; the others keep hitting, the breaker
        # stays shut.
        site.renders.clear()
        for _ in range(3):
            assert site.render() == site.expected
        assert site.renders == dict.fromkeys(cards, 3)
        assert not site.cache.breaker.is_open
        # A read of one key follows ASK from the new node while the slot
        # map still names the old one: it is not kept, since the old
        # node's tracking would never hear of its changes.
        entry = site.cache.key_for(name, 0)
        assert site.call(
            site.backend.aget_many([entry])
            if site.runner is not None
            else site.backend.get_many([entry])
        ) != [None]
        assert all(near.peek(entry) is None for near in nears(site).values())
    finally:
        _finish_moving(cluster, slot, target_id)
    try:
        # Moved: the reads follow MOVED once, then go to the new node, whose
        # near cache keeps them and hears of their changes.
        site.renders.clear()
        assert site.render() == site.expected
        warm(site)
        assert site.renders == {}
        assert site.cache.invalidate_all(name)
        assert site.render() == site.expected
        assert site.renders == cards
        warm(site)
        site.renders.clear()
        assert redis_on(target).incr(counter)
        time.sleep(0.05)
        assert site.render() == site.expected
        assert site.renders == cards
    finally:
        _finish_moving(cluster, slot, _start_moving(cluster, slot, target, source))
