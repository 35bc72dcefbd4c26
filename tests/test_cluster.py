"""Redis Cluster: :class:`~jinja_fragcache.backends.cluster.RedisClusterBackend`
on a real three-primary cluster the module starts (no replicas).

The backend contract of ``test_backends`` runs here too; then pages whose
keys spread over the three primaries, invalidation, round trips counted per
node, and one primary killed.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jinja2 import DictLoader, Environment

from jinja_fragcache import FragmentCache, FragmentCacheExtension
from jinja_fragcache.backends.cluster import NodeUnavailable, RedisClusterBackend
from jinja_fragcache.keys import (
    make_fragment_key,
    name_version_key,
    tag_version_key,
    variant_version_key,
)

from .support import packets, redis_on, redis_server, run, wait_until
from .test_backends import (  # the contract, on the cluster backend
    key,
    test_add_many,
    test_add_only_when_missing,
    test_async_incr_is_exact_too,
    test_async_twins,
    test_delete,
    test_get_many_keeps_order_and_reports_missing,
    test_incr_is_exact_at_the_size_of_random_versions,
    test_incr_never_creates,
    test_keeps_the_protocol,
    test_set_many_overwrites,
    test_timeouts_expire_and_none_does_not,
    test_values_are_raw_bytes_never_unpickled,
)

__all__ = [
    "key",
    "test_add_many",
    "test_add_only_when_missing",
    "test_async_incr_is_exact_too",
    "test_async_twins",
    "test_delete",
    "test_get_many_keeps_order_and_reports_missing",
    "test_incr_is_exact_at_the_size_of_random_versions",
    "test_incr_never_creates",
    "test_keeps_the_protocol",
    "test_set_many_overwrites",
    "test_timeouts_expire_and_none_does_not",
    "test_values_are_raw_bytes_never_unpickled",
]


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(count: int) -> list[int]:
    """Free loopback ports whose cluster bus (port + 10000) is free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(20000, 44999)
        if port not in ports and _free(port) and _free(port + 10000):
            ports.append(port)
    return ports


class Cluster:
    """Three primaries, slots split evenly, ``cluster-require-full-coverage
    no`` (so the others keep serving while one is down)."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None or shutil.which("redis-cli") is None:
            pytest.fail(
                "The cluster tests need redis-server and redis-cli: "
                "apt-get install redis-server (redis-tools)"
            )
        self.binary = binary
        self.folder = folder
        self.ports = cluster_ports(3)
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.ranges: list[tuple[int, int, int]] = []
        self.down: set[int] = set()

    def start_node(self, port: int) -> None:
        self.processes[port] = subprocess.Popen(
            redis_server(
                self.binary,
                port,
                self.folder,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.folder / f"nodes-{port}.conf"),
                "--cluster-node-timeout",
                "1000",
                "--cluster-require-full-coverage",
                "no",
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        process = self.processes[port]

        def answers() -> bool:
            if process.poll() is not None:
                pytest.fail(f"redis-server exited with status {process.returncode}")
            return bool(redis_on(port).ping())

        wait_until(answers, f"redis-server on port {port} did not answer", 20)

    def start(self) -> None:
        for port in self.ports:
            self.start_node(port)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.wait_ok()

    def wait_ok(self) -> None:
        for port in self.ports:
            wait_until(
                lambda port=port: (
                    b"cluster_state:ok"
                    in redis_on(port).execute_command("CLUSTER", "INFO")
                ),
                "the cluster was not ok",
                20,
            )

    def kill(self, port: int) -> None:
        self.processes[port].kill()
        self.processes[port].wait(10)
        self.down.add(port)

    def restart(self, port: int) -> None:
        """Back with its nodes.conf (its slots), empty."""
        self.start_node(port)
        self.wait_ok()
        self.down.discard(port)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
                process.wait(10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"

    def owner(self, key: str) -> int:
        """The port of the primary that holds *key*'s slot, asked of the
        servers (CLUSTER KEYSLOT, CLUSTER NODES), not of the client."""
        if not self.ranges:
            for port in self.ports:
                nodes = redis_on(port).execute_command("CLUSTER", "NODES").decode()
                me = next(line for line in nodes.splitlines() if "myself" in line)
                for part in me.split()[8:]:
                    low, _, high = part.partition("-")
                    self.ranges.append((int(low), int(high or low), port))
        asked = self.ports[1] if self.ports[0] in self.down else self.ports[0]
        slot = int(redis_on(asked).execute_command("CLUSTER", "KEYSLOT", key))
        return next(port for low, high, port in self.ranges if low <= slot <= high)

    def keys_on(self, port: int, prefix: str) -> list[str]:
        return [k.decode() for k in redis_on(port).scan_iter(match=f"{prefix}:*")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    made = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        made.start()
        yield made
    finally:
        made.stop()


@pytest.fixture
def cluster_backend(cluster: Cluster) -> Iterator[RedisClusterBackend]:
    """Without near caches, every read goes to the nodes, to be counted;
    one slot per name (``name_shards=1``), so pages spread by name."""
    backend = RedisClusterBackend.from_url(cluster.url, near_cache=False, name_shards=1)
    yield backend
    backend.close()


@pytest.fixture
def near_backend(cluster: Cluster) -> Iterator[RedisClusterBackend]:
    backend = RedisClusterBackend.from_url(cluster.url, name_shards=1)
    yield backend
    backend.close()


@pytest.fixture(params=["near", "plain"])
def backend(request: pytest.FixtureRequest) -> RedisClusterBackend:
    name = "near_backend" if request.param == "near" else "cluster_backend"
    made: RedisClusterBackend = request.getfixturevalue(name)
    return made


@pytest.fixture
def async_backend(backend: RedisClusterBackend) -> RedisClusterBackend:
    return backend


def test_a_plain_redis_backend_refuses_a_cluster_client(
    cluster: Cluster,
) -> None:
    # The cluster needs a backend of its own (a page's MGET spans slots),
    # and a plain one refuses a cluster's client at once, saying so.
    from redis.cluster import RedisCluster

    from jinja_fragcache import RedisBackend

    client = RedisCluster.from_url(cluster.url)
    try:
        with pytest.raises(TypeError, match="RedisClusterBackend"):
            RedisBackend(client, near_cache=False)
    finally:
        client.close()


# -- pages on the cluster ----------------------------------------------------

PRODUCTS = [{"id": i} for i in range(50)]


def spread_names(cluster: Cluster, prefix: str) -> list[str]:
    """One fragment name per primary: with ``name_shards=1`` all of a
    name's variants share its slot (the key's hash tag), so a page spreads
    by its names."""
    names: dict[int, str] = {}
    for n in range(1000):
        name = f"card{n}"
        names.setdefault(
            cluster.owner(make_fragment_key(name, (), prefix=prefix)), name
        )
        if len(names) == len(cluster.ports):
            return [names[port] for port in cluster.ports]
    raise AssertionError("no name on some primary")


def spread_page(names: list[str]) -> str:
    """A box and 50 cards, a third of them under each name."""
    collections = "".join(
        f"{{% cache_each 300 {name} p in products[{k}::{len(names)}] p.id "
        "tags=['cards'] %}[{{ tick(p.id) }}]{% endcache_each %}"
        for k, name in enumerate(names)
    )
    return (
        "{% cache_fragment 300 box tags=['nav'] %}<box>{{ tick('box') }}"
        "{% endcache_fragment %}" + collections
    )


def spread_output(names: list[str]) -> str:
    count = len(names)
    return "<box>box" + "".join(
        f"[{i}]" for k in range(count) for i in range(k, 50, count)
    )


class Site:
    """One process's cache and templates on the cluster."""

    def __init__(
        self,
        backend: RedisClusterBackend,
        use_async: bool,
        cluster: Cluster | None = None,
        **options: Any,
    ) -> None:
        self.backend = backend
        self.prefix = "c" + uuid.uuid4().hex[:10]
        self.cache = FragmentCache(backend, prefix=self.prefix, **options)
        #: The page's card names, one per primary (with a cluster).
        self.names = [] if cluster is None else spread_names(cluster, self.prefix)
        self.expected = spread_output(self.names)
        self.env = Environment(
            loader=DictLoader({"page.html": spread_page(self.names)}),
            extensions=[FragmentCacheExtension],
            enable_async=use_async,
        )
        self.env.fragment_cache = self.cache  # type: ignore[attr-defined]
        self.runner = asyncio.Runner() if use_async else None
        self.renders: Counter[Any] = Counter()

    def tick(self, label: Any) -> str:
        self.renders[label] += 1
        return str(label)

    def render(self, source: str | None = None, **context: Any) -> str:
        template = (
            self.env.get_template("page.html")
            if source is None
            else self.env.from_string(source)
        )
        context = {"tick": self.tick, "products": PRODUCTS, **context}
        if self.runner is None:
            return template.render(context)
        return self.runner.run(template.render_async(context))

    def call(self, result: Any) -> Any:
        if self.runner is not None and asyncio.iscoroutine(result):
            return self.runner.run(result)
        return result

    def close(self) -> None:
        if self.runner is not None:
            self.runner.run(self.backend.aclose())
            self.runner.close()


@pytest.fixture
def site(
    cluster_backend: RedisClusterBackend, cluster: Cluster, enable_async: bool
) -> Iterator[Site]:
    made = Site(cluster_backend, enable_async, cluster, lock_wait=0.5)
    yield made
    made.close()


def test_a_page_spreads_over_every_primary_and_hits(
    site: Site, cluster: Cluster
) -> None:
    assert site.render() == site.expected
    assert sum(site.renders.values()) == 51
    # Entries, variant counters, the name and tag counters: on every primary.
    by_port = {port: cluster.keys_on(port, site.prefix) for port in cluster.ports}
    assert all(by_port.values()), {p: len(k) for p, k in by_port.items()}
    for port, keys in by_port.items():
        assert all(cluster.owner(k) == port for k in keys[:5])
    # Each name's entries and counters on its own primary, tags anywhere.
    for port, name in zip(cluster.ports, site.names, strict=True):
        cards = range(site.names.index(name), 50, len(site.names))
        entries = [site.cache.key_for(name, i) for i in cards]
        counters = [variant_version_key(k) for k in entries]
        counters.append(name_version_key(name, prefix=site.prefix))
        assert {cluster.owner(k) for k in entries + counters} == {port}
    # Two entries and variant counters per fragment, four names, two tags.
    assert sum(map(len, by_port.values())) == 2 * 51 + 4 + 2

    site.renders.clear()
    assert site.render() == site.expected
    assert site.renders == {}
    assert sum(site.cache.stats()[name]["hits"] for name in site.names) == 50


def _thirds(site: Site, index: int) -> dict[Any, int]:
    return dict.fromkeys(range(index, 50, len(site.names)), 1)


@pytest.mark.parametrize(
    ("invalidate", "rendered"),
    [
        (lambda site: site.cache.invalidate(site.names[1], 7), lambda site: {7: 1}),
        (lambda site: site.cache.invalidate_all("box"), lambda site: {"box": 1}),
        (
            lambda site: site.cache.invalidate_all(site.names[2]),
            lambda site: _thirds(site, 2),
        ),
        (lambda site: site.cache.invalidate_tags("nav"), lambda site: {"box": 1}),
        (
            lambda site: site.cache.invalidate_tags("cards"),
            lambda site: dict.fromkeys(range(50), 1),
        ),
    ],
    ids=["invalidate", "invalidate_all", "invalidate_all-a-third", "tag", "tag-50"],
)
def test_invalidation_on_the_cluster(
    site: Site, cluster: Cluster, invalidate: Any, rendered: Any
) -> None:
    from jinja_fragcache.backends.scripts import INCR_EXISTING

    for port in cluster.ports:  # else a node's first bump adds an EVAL
        redis_on(port).script_load(INCR_EXISTING)
    site.render()
    site.renders.clear()
    with packets() as sent:
        assert invalidate(site) is True
    # O(1): one counter's bump (and, for one variant, its entry's delete),
    # however many variants there are; no key is ever scanned.
    commands = [command for _, command in sent if command not in SETUP]
    assert commands in ([b"EVALSHA"], [b"EVALSHA", b"DEL"]), commands
    assert site.render() == site.expected
    assert site.renders == rendered(site)
    site.renders.clear()
    assert site.render() == site.expected
    assert site.renders == {}


# -- round trips per node ----------------------------------------------------


#: What opening a connection sends (not a round trip of the operation).
SETUP = {b"HELLO", b"CLIENT", b"CLUSTER", b"COMMAND", b"PING", b"READONLY"}


def _tag_elsewhere(site: Site, cluster: Cluster) -> str:
    """A tag whose counter lives on another primary than ``site.names[0]``."""
    return next(
        tag
        for tag in (f"t{n}" for n in range(100))
        if cluster.owner(tag_version_key(tag, prefix=site.prefix)) != cluster.ports[0]
    )


def test_a_hit_of_fifty_cards_is_one_round_trip_per_node(
    site: Site, cluster: Cluster
) -> None:
    name, tag = site.names[0], _tag_elsewhere(site, cluster)
    source = (
        f"{{% cache_each 300 {name} p in products p.id tags=['{tag}'] %}}"
        "[{{ tick(p.id) }}]{% endcache_each %}"
    )
    site.render(source)
    site.renders.clear()
    with packets() as sent:
        assert site.render(source) == "".join(f"[{i}]" for i in range(50))
    assert site.renders == {}
    # The 50 entries, their variant counters and the name's counter share
    # the name's slot; the tag's counter has its own: one script per slot, all
    # of a node's in one packet.
    owners = {cluster.ports[0], cluster.owner(tag_version_key(tag, prefix=site.prefix))}
    assert Counter(port for port, _ in sent) == dict.fromkeys(owners, 1)
    assert [command for _, command in sent] == [b"EVALSHA", b"EVALSHA"]


def _load_scripts(cluster: Cluster) -> None:
    """Every script on every primary: else a node's first run of each adds
    an ``EVAL`` (once per node start, not per render)."""
    from jinja_fragcache.backends import scripts

    for port in cluster.ports:
        for source in (
            scripts.INCR_EXISTING,
            scripts.READ_CLAIMING,
            scripts.WRITE_RELEASING,
        ):
            redis_on(port).script_load(source)


def _card_five(name: str, tag: str) -> str:
    """One variant (5) of fragment *name*, tagged *tag*."""
    return (
        f"{{% cache_fragment 300 {name} 5 tags=['{tag}'] %}}[{{{{ tick(5) }}}}]"
        "{% endcache_fragment %}"
    )


def _invalidate_one(site: Site, name: str) -> bool:
    return site.cache.invalidate(name, 5)


@pytest.mark.parametrize(
    "before",
    [None, _invalidate_one, lambda site, name: site.cache.invalidate_all(name)],
    ids=["cold", "invalidate", "invalidate_all"],
)
@pytest.mark.parametrize("page", ["one", "fifty"])
def test_a_miss_is_two_round_trips_per_node(
    site: Site, cluster: Cluster, before: Any, page: str
) -> None:
    # The first trip runs READ_CLAIMING once per slot (entries, counters and
    # locks of one name share one); the second stores and releases.
    _load_scripts(cluster)
    name, tag = site.names[0], _tag_elsewhere(site, cluster)
    source = (
        _card_five(name, tag)
        if page == "one"
        else f"{{% cache_each 300 {name} p in products p.id tags=['{tag}'] %}}"
        "[{{ tick(p.id) }}]{% endcache_each %}"
    )
    if before is not None:
        site.render(source)
        before(site, name)
        site.renders.clear()
    with packets() as packed:
        site.render(source)
    sent = [(port, command) for port, command in packed if command not in SETUP]
    one_variant = page == "one" or before is _invalidate_one
    assert sum(site.renders.values()) == (1 if one_variant else 50)
    # Two trips to the name's node, one to the tag's (read only: its
    # counter exists or is created by the first trip).
    tag_node = cluster.owner(tag_version_key(tag, prefix=site.prefix))
    assert Counter(port for port, _ in sent) == {cluster.ports[0]: 2, tag_node: 1}
    assert {command for _, command in sent} == {b"EVALSHA"}


def test_a_miss_after_invalidate_tags_claims_in_a_trip_of_its_own(
    site: Site, cluster: Cluster
) -> None:
    # The limit of per-slot scripts: the tag's counter lives in another
    # slot, so the entry's script cannot see it changed; the fragment cache
    # does, after the first trip, and claims the lock in one more.
    _load_scripts(cluster)
    name, tag = site.names[0], _tag_elsewhere(site, cluster)
    source = _card_five(name, tag)
    site.render(source)
    site.cache.invalidate_tags(tag)
    site.renders.clear()
    with packets() as packed:
        assert site.render(source) == "[5]"
    sent = [(port, command) for port, command in packed if command not in SETUP]
    assert site.renders == {5: 1}
    tag_node = cluster.owner(tag_version_key(tag, prefix=site.prefix))
    assert Counter(port for port, _ in sent) == {cluster.ports[0]: 3, tag_node: 1}
    assert [command for _, command in sent].count(b"SET") == 1  # the lock


def test_read_claiming_judges_what_shares_a_slot(
    cluster_backend: RedisClusterBackend,
) -> None:
    from jinja_fragcache.backends.base import HELD, UNCLAIMED, WON
    from jinja_fragcache.entry import Entry

    from .test_backends import _claiming_read

    b, tag = cluster_backend, uuid.uuid4().hex

    def key() -> str:  # one hash tag: one slot
        return f"{{{tag}}}:{uuid.uuid4().hex[:8]}"

    counter, made, other = key(), key(), uuid.uuid4().hex
    b.set_many({counter: b"7", other: b"3"}, None)

    def entry(versions: dict[str, str], expiry: float) -> bytes:
        return Entry("body", expiry, "t.html", "d", versions).encode()

    fresh, stale, invalid, missing, held, crossed = (key() for _ in range(6))
    b.set_many(
        {
            fresh: entry({counter: "7"}, time.time() + 60),
            stale: entry({counter: "7"}, time.time() - 1),
            invalid: entry({counter: "6"}, time.time() + 60),
            held: entry({counter: "6"}, time.time() + 60),
            # Records a counter of another slot, at another version: left
            # to the fragment cache, which reads it and judges again.
            crossed: entry({counter: "7", other: "2"}, time.time() + 60),
        },
        60,
    )
    b.add(held + ":lock", b"someone", 30)
    entries = [fresh, stale, invalid, missing, held, crossed]
    read = _claiming_read(key, entries, [counter, made, other], cold=True)
    claimed = b.read_claiming(read)
    assert claimed.claims == [UNCLAIMED, WON, WON, WON, HELD, UNCLAIMED]
    assert claimed.values[6] == b"7" and claimed.values[8] == b"3"
    created = claimed.values[7]
    assert created is not None and created.isdigit()
    assert b.get_many([made]) == [created]
    assert claimed.nested == {}
    b.write_releasing(
        {missing: b"new"}, 60, [missing + ":lock", held + ":lock"], claimed.token
    )
    assert b.get_many([missing, missing + ":lock", held + ":lock"]) == [
        b"new",
        None,
        b"someone",
    ]


# -- one name over many slots (name_shards) ------------------------------------

CARDS = (
    "{% cache_each 300 card p in products p.id tags=['cards'] %}"
    "[{{ tick(p.id) }}]{% endcache_each %}"
)


@pytest.fixture
def sharded(cluster: Cluster, enable_async: bool) -> Iterator[Site]:
    """The default: every name's variants over 16 slots; no near cache, so
    that the reads are counted."""
    backend = RedisClusterBackend.from_url(cluster.url, near_cache=False)
    assert backend.name_shards == 16
    made = Site(backend, enable_async, lock_wait=0.5)
    yield made
    made.close()
    backend.close()


def test_one_names_variants_spread_over_every_primary(
    sharded: Site, cluster: Cluster
) -> None:
    from redis.crc import key_slot

    from jinja_fragcache.keys import lock_key, name_version_key_of, name_version_keys

    _load_scripts(cluster)
    site, cache = sharded, sharded.cache
    with packets() as packed:
        assert site.render(CARDS) == "".join(f"[{i}]" for i in range(50))
    cold = [(port, command) for port, command in packed if command not in SETUP]
    entries = [cache.key_for("card", i) for i in range(50)]
    # A variant's entry, counter, lock and its shard's name counter: one slot.
    for entry in entries:
        name_counter = name_version_key_of("card", entry, prefix=site.prefix, shards=16)
        slotted = [entry, variant_version_key(entry), lock_key(entry), name_counter]
        assert len({key_slot(k.encode()) for k in slotted}) == 1
    assert len({key_slot(k.encode()) for k in entries}) == 16
    owners = {cluster.owner(k) for k in entries}
    assert owners == set(cluster.ports)
    # A cold page: two trips to each node (the tag's node reads only, unless
    # it holds cards too).
    assert Counter(port for port, _ in cold) == dict.fromkeys(cluster.ports, 2)

    site.renders.clear()
    with packets() as packed:
        site.render(CARDS)
    assert site.renders == {}
    warm = [(port, command) for port, command in packed if command not in SETUP]
    assert Counter(port for port, _ in warm) == dict.fromkeys(cluster.ports, 1)

    # invalidate_all: every shard's counter, one packet per node, and every
    # variant renders again once, then hits.
    with packets() as packed:
        assert cache.invalidate_all("card")
    bumps = [(port, command) for port, command in packed if command not in SETUP]
    assert [command for _, command in bumps] == [b"EVALSHA"] * len(cluster.ports)
    assert len({port for port, _ in bumps}) == len(cluster.ports)
    site.render(CARDS)
    assert site.renders == dict.fromkeys(range(50), 1)
    site.renders.clear()
    site.render(CARDS)
    assert site.renders == {}
    # One variant: its own counter only.
    assert cache.invalidate("card", 7)
    site.render(CARDS)
    assert site.renders == {7: 1}
    # A name never rendered: its 16 counters are created, at random values,
    # in one more packet per node.
    with packets() as packed:
        assert cache.invalidate_all("never")
    made = [(port, command) for port, command in packed if command not in SETUP]
    assert Counter(port for port, _ in made) == dict.fromkeys(cluster.ports, 2)
    counters = name_version_keys("never", prefix=site.prefix, shards=16)
    values = site.backend.get_many(counters)
    assert all(value is not None and value.isdigit() for value in values)
    assert len(set(values)) == 16


def test_shards_are_checked() -> None:
    with pytest.raises(ValueError, match="name shards"):
        RedisClusterBackend(url="redis://127.0.0.1:1", name_shards=0)


# -- a primary dies ------------------------------------------------------------


def _on(cluster: Cluster, ports: set[int], keys: list[str]) -> bool:
    return {cluster.owner(k) for k in keys} <= ports


def _fragment_on(prefix: str, ports: set[int], cluster: Cluster) -> str:
    """A fragment name whose entry and every counter live on *ports*."""
    for n in range(1000):
        name = f"frag{n}"
        entry = make_fragment_key(name, (), prefix=prefix)
        keys = [
            entry,
            variant_version_key(entry),
            name_version_key(name, prefix=prefix),
        ]
        if _on(cluster, ports, keys):
            return name
    raise AssertionError("no such fragment")


def test_a_dead_primary_fails_open_for_its_fragments_only(
    cluster: Cluster, enable_async: bool
) -> None:
    backend = RedisClusterBackend.from_url(
        cluster.url, node_cooldown=0.5, name_shards=1
    )
    site = Site(backend, enable_async, lock_wait=0.5, breaker_cooldown=30)
    dead, *alive = cluster.ports
    kept = _fragment_on(site.prefix, set(alive), cluster)
    lost = _fragment_on(site.prefix, {dead}, cluster)
    tag = next(
        tag
        for tag in (f"t{n}" for n in range(100))
        if _on(cluster, set(alive), [tag_version_key(tag, prefix=site.prefix)])
    )
    page = (
        f"{{% cache_fragment 300 {kept} tags='{tag}' %}}<{{{{ tick('kept') }}}}>"
        f"{{% endcache_fragment %}}"
        f"{{% cache_fragment 300 {lost} %}}<{{{{ tick('lost') }}}}>"
        "{% endcache_fragment %}"
    )
    cards = (
        "{% cache_each 300 card p in products p.id %}[{{ p.id }}]{% endcache_each %}"
    )
    try:
        assert site.render(page) == "<kept><lost>"
        site.render(cards)
        site.renders.clear()
        cluster.kill(dead)
        for _ in range(3):
            assert site.render(page) == "<kept><lost>"
            # A page of one fragment on the surviving nodes, and the batch
            # of 50 cards (which needs the dead node too: it fails open whole).
            assert (
                site.render(
                    f"{{% cache_fragment 300 {kept} tags='{tag}' %}}x{{% endcache_fragment %}}"
                )
                == "<kept>"
            )
            assert site.render(cards) == "".join(f"[{i}]" for i in range(50))
        assert site.renders == {"lost": 3}  # the kept fragment hit every time
        assert not site.cache.breaker.is_open  # the others were never left alone
        stats = site.cache.stats()
        assert stats[lost]["errors"] == 3 and stats[kept]["errors"] == 0
        assert stats[kept]["hits"] == 6
        with pytest.raises(NodeUnavailable):
            site.call(
                backend.aget_many([make_fragment_key(lost, (), prefix=site.prefix)])
                if enable_async
                else backend.get_many([make_fragment_key(lost, (), prefix=site.prefix)])
            )
    finally:
        site.close()
        backend.close()
        cluster.restart(dead)
    # Back (empty): the lost fragment caches again once the node is tried.
    backend = RedisClusterBackend.from_url(
        cluster.url, node_cooldown=0.5, name_shards=1
    )
    site = Site(backend, enable_async, lock_wait=0.5)
    try:
        site.render(page)
        site.renders.clear()
        assert site.render(page) == "<kept><lost>"
        assert site.renders == {}
    finally:
        site.close()
        backend.close()


def test_every_primary_down_is_an_outage(cluster: Cluster) -> None:
    import redis

    # A cluster with nobody listening: the breaker's business, not one node's.
    backend = RedisClusterBackend(startup_nodes=[("127.0.0.1", cluster_ports(1)[0])])
    with pytest.raises((redis.RedisError, redis.RedisClusterException)) as raised:
        backend.get_many(["k"])
    assert not isinstance(raised.value, NodeUnavailable)
    cache = FragmentCache(backend, breaker_cooldown=30)
    env = Environment(extensions=[FragmentCacheExtension])
    env.fragment_cache = cache  # type: ignore[attr-defined]
    source = "{% cache_fragment 300 x %}up{% endcache_fragment %}"
    assert env.from_string(source).render() == "up"
    assert cache.breaker.is_open
    backend.close()


def test_async_clients_follow_their_event_loop(
    cluster_backend: RedisClusterBackend, key: Any
) -> None:
    k = key()
    cluster_backend.set(k, b"v", 60)
    for _ in range(2):
        assert run(cluster_backend.aget_many([k]), cluster_backend) == [b"v"]


# -- Django ----------------------------------------------------------------------


def test_django_names_the_cluster_backend(settings: Any, cluster: Cluster) -> None:
    from django.template import engines

    from django_bridge import get_fragment_cache, invalidate_fragment

    prefix = "dj" + uuid.uuid4().hex[:10]
    settings.FRAGCACHE = {
        "BACKEND": "jinja_fragcache.backends.cluster.RedisClusterBackend",
        "OPTIONS": {"url": cluster.url, "node_cooldown": 1.5},
        "KEY_PREFIX": prefix,
    }
    cache = get_fragment_cache()
    assert type(cache.backend) is RedisClusterBackend
    assert cache.backend.node_cooldown == 1.5
    jinja = engines["jinja2"].get_template("card.jinja")
    dtl = engines["django"].get_template("card.html")
    assert jinja.render({"pk": 3}).strip() == "card 3 by jinja"
    assert dtl.render({"pk": 3}).strip() == "card 3 by jinja"
    port = cluster.owner(cache.key_for("card", 3))
    assert redis_on(port).get(cache.key_for("card", 3)) is not None
    assert invalidate_fragment("card", 3)
    assert dtl.render({"pk": 3}).strip() == "card 3 by dtl"
