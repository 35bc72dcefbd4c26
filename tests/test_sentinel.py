"""Redis behind Sentinel: ``RedisBackend.from_sentinel`` on a real primary, a
replica and a sentinel the module starts; the primary is killed and the
same backend, never restarted, caches again on the new one."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jinja2 import DictLoader, Environment

from jinja_fragcache import FragmentCache, FragmentCacheExtension, RedisBackend
from jinja_fragcache.backends.redis import REGISTERED_NAME, TRACKING_NAME
from jinja_fragcache.backends.sentinel import SentinelBackend

from .support import free_port, redis_on, redis_server, trips, wait_until

SERVICE = "mymaster"


class Servers:
    """Two redis-servers (a primary and its replica) and one sentinel."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "The sentinel tests need redis-server (with its sentinel mode): "
                "apt-get install redis-server"
            )
        self.binary = binary
        self.folder = folder
        self.ports = [free_port(), free_port()]
        self.sentinel_port = free_port()
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def start_server(self, port: int, replica_of: int | None = None) -> None:
        replica = ["--replicaof", "127.0.0.1", str(replica_of)] if replica_of else []
        self.processes[port] = subprocess.Popen(
            redis_server(self.binary, port, self.folder, *replica),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_until(
            lambda: redis_on(port).ping(), f"redis-server {port} did not start", 30
        )

    def start(self) -> None:
        primary, replica = self.ports
        self.start_server(primary)
        self.start_server(replica, replica_of=primary)
        config = self.folder / "sentinel.conf"
        config.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {self.folder}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 400\n"
            f"sentinel failover-timeout {SERVICE} 2000\n"
        )
        self.processes[self.sentinel_port] = subprocess.Popen(
            [self.binary, str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        self.wait_replicated()

    def primary(self) -> int:
        host, port = redis_on(self.sentinel_port).execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE
        )
        return int(port)

    def replica(self) -> int:
        return next(port for port in self.ports if port != self.primary())

    def wait_replicated(self) -> None:
        """The replica is linked, and the sentinel sees it healthy."""

        def ready() -> bool:
            replica = self.replica()
            info = redis_on(replica).info("replication")
            if info.get("master_link_status") != "up":
                return False
            for entry in redis_on(self.sentinel_port).sentinel_slaves(SERVICE):
                if int(entry["port"]) == replica:
                    return not (entry["is_sdown"] or entry["is_disconnected"])
            return False

        wait_until(ready, "the replica did not come up in sentinel's view", 30)

    def kill_primary(self) -> int:
        port = self.primary()
        self.processes[port].kill()
        self.processes[port].wait(10)
        return port

    def restore(self, port: int) -> None:
        """*port* back, as the replica of the current primary."""
        self.start_server(port, replica_of=self.primary())
        self.wait_replicated()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
                process.wait(10)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    made = Servers(tmp_path_factory.mktemp("sentinel"))
    try:
        made.start()
        yield made
    finally:
        made.stop()


PAGE = (
    "{% cache_fragment 300 box tags=['nav'] %}<box>{{ tick('box') }}"
    "{% endcache_fragment %}"
    "{% cache_each 300 card p in products p.id %}[{{ tick(p.id) }}]"
    "{% endcache_each %}"
)
PRODUCTS = [{"id": i} for i in range(5)]
EXPECTED = "<box>box" + "".join(f"[{i}]" for i in range(5))


class Site:
    def __init__(self, backend: RedisBackend, use_async: bool) -> None:
        self.backend = backend
        self.prefix = "s" + uuid.uuid4().hex[:10]
        self.cache = FragmentCache(
            backend, prefix=self.prefix, lock_wait=0.2, breaker_cooldown=0.2
        )
        self.env = Environment(
            loader=DictLoader({"page.html": PAGE}),
            extensions=[FragmentCacheExtension],
            enable_async=use_async,
        )
        self.env.fragment_cache = self.cache  # type: ignore[attr-defined]
        self.runner = asyncio.Runner() if use_async else None
        self.renders: Counter[Any] = Counter()

    def tick(self, label: Any) -> str:
        self.renders[label] += 1
        return str(label)

    def render(self) -> str:
        template = self.env.get_template("page.html")
        context = {"tick": self.tick, "products": PRODUCTS}
        if self.runner is None:
            return template.render(context)
        return self.runner.run(template.render_async(context))

    def close(self) -> None:
        if self.runner is not None:
            self.runner.run(self.backend.aclose())
            self.runner.close()
        self.backend.close()


def test_from_sentinel_is_a_sentinel_backend(servers: Servers) -> None:
    backend = RedisBackend.from_sentinel(
        [("127.0.0.1", servers.sentinel_port)], SERVICE, near_cache=False
    )
    try:
        assert isinstance(backend, SentinelBackend) and backend.near is None
        backend.set("k", b"v", 60)
        assert redis_on(servers.primary()).get("k") == b"v"
        # Short timeouts, for the primary and for the sentinels.
        kwargs = backend.client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == 0.5
    finally:
        backend.close()


def test_a_failover_needs_no_restart(servers: Servers, enable_async: bool) -> None:
    backend = RedisBackend.from_sentinel(
        [("127.0.0.1", servers.sentinel_port)], SERVICE
    )
    site = Site(backend, enable_async)
    other = None
    try:
        assert site.render() == EXPECTED
        assert site.render() == EXPECTED
        assert sum(site.renders.values()) == 6  # the second render hit
        old = servers.primary()
        wait_until(lambda: _tracked_on(old), "the near cache never tracked", 30)

        dead = servers.kill_primary()
        uncached = 0
        deadline = time.monotonic() + 30
        while servers.primary() == dead or uncached == 0:
            # During the switch: rendered uncached, never wrong.
            before = sum(site.renders.values())
            assert site.render() == EXPECTED
            uncached += sum(site.renders.values()) > before
            if time.monotonic() > deadline:
                pytest.fail("no failover within 30 s")
            time.sleep(0.05)
        new = servers.primary()
        assert new != dead
        assert site.cache.stats()["box"]["errors"] >= 1

        # Caching resumes on the new primary, same backend, same process.
        def cached_again() -> bool:
            site.cache.invalidate_all("box")  # a fresh entry, written to `new`
            site.renders.clear()
            site.render()
            site.render()
            return site.renders["box"] == 1

        wait_until(cached_again, "caching did not resume", seconds=20)
        entry = redis_on(new).get(site.cache.key_for("box"))
        assert entry is not None and entry.startswith(b"FC2 ")

        # The near cache tracks the new primary, registered there by a lookup
        # connection of its own: another client's invalidation there reaches
        # this process's next render.
        wait_until(lambda: _tracked_on(new), "the near cache did not follow", 30)
        wait_until(lambda: _registered_on(new), "the registration did not follow", 30)
        wait_until(
            lambda: _answered_from_memory(site),
            "no render was answered from memory",
            30,
        )
        other = RedisBackend.from_url(f"redis://127.0.0.1:{new}/0", near_cache=False)
        FragmentCache(other, prefix=site.prefix).invalidate_all("box")
        site.renders.clear()
        assert site.render() == EXPECTED
        assert site.renders == {"box": 1}
    finally:
        site.close()
        if other is not None:
            other.close()
    servers.restore(dead)


def _tracked_on(port: int) -> bool:
    return any(
        client.get("name") == TRACKING_NAME for client in redis_on(port).client_list()
    )


def _registered_on(port: int) -> bool:
    """Whether, on *port*, the lookup connection registered the tracking
    (``t``) for the tracking connection there (``redir``)."""
    found = {client.get("name"): client for client in redis_on(port).client_list()}
    tracker, lookup = found.get(TRACKING_NAME), found.get(REGISTERED_NAME)
    return (
        tracker is not None
        and lookup is not None
        and "t" in lookup["flags"]
        and lookup["redir"] == tracker["id"]
    )


def _answered_from_memory(site: Site) -> bool:
    """A render that renders nothing and sends the server nothing, tracking
    on: answered by the near cache, or by the hits remembered while its
    count of changes stands still (``memo.py``), which nothing moves once
    the page is cached (the server echoes none of this process's own
    writes), so counting the near cache's own hits would not do."""
    near = site.backend.near
    assert near is not None
    site.renders.clear()
    with trips() as sent:
        site.render()
    return near.active and site.renders == {} and not sent


def test_django_names_a_sentinel_backend(settings: Any, servers: Servers) -> None:
    from django.template import engines

    from django_bridge import get_fragment_cache, invalidate_fragment

    settings.FRAGCACHE = {
        "BACKEND": "jinja_fragcache.backends.sentinel.SentinelBackend",
        "OPTIONS": {
            "sentinels": [["127.0.0.1", servers.sentinel_port]],  # as settings are
            "service_name": SERVICE,
        },
        "KEY_PREFIX": "dj" + uuid.uuid4().hex[:10],
    }
    cache = get_fragment_cache()
    assert type(cache.backend) is SentinelBackend
    jinja = engines["jinja2"].get_template("card.jinja")
    dtl = engines["django"].get_template("card.html")
    assert jinja.render({"pk": 4}).strip() == "card 4 by jinja"
    assert dtl.render({"pk": 4}).strip() == "card 4 by jinja"
    assert redis_on(servers.primary()).get(cache.key_for("card", 4)) is not None
    assert invalidate_fragment("card", 4)
    assert dtl.render({"pk": 4}).strip() == "card 4 by dtl"
