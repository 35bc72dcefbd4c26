"""Redis Cluster, through redis-py's ``RedisCluster`` (``pip install
"jinja-fragcache[redis]"``).

Keys carry their fragment's name and shard as a hash tag (see
:mod:`jinja_fragcache.keys`): the variants of one name spread over
*name_shards* slots, and a variant's entry, its counter and lock, and its
shard's name counter share one slot; a tag's counter has a slot of its own.
Every operation is routed here, not by redis-py's cluster pipeline: the
commands for each node go out in one packet on one of its connections, to
every node before any reply is read, and a node that fails fails alone.
redis-py's own pipeline retries each failed command one by one (measured:
52 s for a read of 30 keys with one primary frozen), which no page can wait
for.

A miss takes two trips per node, as on one Redis: ``read_claiming`` runs
:data:`~.scripts.READ_CLAIMING` once per slot, on that slot's keys only,
and ``write_releasing`` runs :data:`~.scripts.WRITE_RELEASING` once per
slot.  What a slot's script cannot see, a counter of another slot that an
entry records (a tag's, a nested fragment's), the fragment cache judges
after the first trip, and claims in a trip of its own: a miss after
``invalidate_tags`` takes three trips to the fragment's node.

A node that cannot be reached is left alone for *node_cooldown* seconds:
an operation that needs it raises :class:`NodeUnavailable` at once, without
I/O, and it is one of :attr:`RedisClusterBackend.request_errors`, so the
fragment cache renders that fragment uncached and keeps its breaker closed:
fragments whose keys all live on the other nodes keep hitting.  When every
primary is unreachable the original error is raised, an outage: the
breaker opens as it does for a single Redis.

There is no near cache on a cluster (yet): every hit reads, one trip per
node involved.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..keys import check_shards, tracked_prefixes
from ..near import DEFAULT_MAX_BYTES, TrackingConnection
from . import scripts
from .base import UNCLAIMED, Claimed, ClaimingRead, Timeout
from .cluster_near import NodeNearCaches, NodePlan, WriteTokens
from .codecs import _as_bytes, _px, _with_ttls
from .redis import TRACKING_NAME, _added, _import_redis

if TYPE_CHECKING:
    import redis.asyncio.cluster
    import redis.cluster

_DEFAULTS = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
_INCR_SHA = scripts.sha(scripts.INCR_EXISTING)
_READ_CLAIMING_SHA = scripts.sha(scripts.READ_CLAIMING)
_WRITE_RELEASING_SHA = scripts.sha(scripts.WRITE_RELEASING)
_READ_WITH_TTL_SHA = scripts.sha(scripts.READ_WITH_TTL)
#: Each script by its SHA, for a node that lacks it (``EVAL`` instead).
_SOURCES = {
    _INCR_SHA: scripts.INCR_EXISTING,
    _READ_WITH_TTL_SHA: scripts.READ_WITH_TTL,
    _READ_CLAIMING_SHA: scripts.READ_CLAIMING,
    _WRITE_RELEASING_SHA: scripts.WRITE_RELEASING,
}

#: One command: its key's hash slot and its arguments.
Command = tuple[int, tuple[Any, ...]]
#: A write's near-cache tokens, ``None`` without a near cache.
Writing = WriteTokens | None


class NodeUnavailable(ConnectionError):
    """A node of the cluster cannot be reached while others can.

    The fragments whose keys live on it render uncached; the others keep
    their cache (a request error: the fragment cache's breaker stays shut).
    """


def _failures() -> tuple[type[BaseException], ...]:
    """What means the node did not answer, as opposed to an error reply."""
    from redis.exceptions import ClusterDownError, ConnectionError, TimeoutError

    # CLUSTERDOWN: the node answers but serves nothing (a lost slot, with
    # cluster-require-full-coverage yes): as good as unreachable.
    return (ConnectionError, TimeoutError, ClusterDownError, OSError)


def _redirects() -> tuple[type[BaseException], ...]:
    from redis.exceptions import AskError, MovedError, TryAgainError

    return (MovedError, AskError, TryAgainError)


def _redis_errors() -> type[BaseException]:
    from redis.exceptions import RedisError

    return RedisError


def _while_moving(command: Command, error: BaseException) -> BaseException:
    """What a redirected command that failed at its new node stands for: a
    missing script stays itself (it runs again as ``EVAL``); anything else
    (``TRYAGAIN``: a script of several keys while its slot is half moved;
    redis-py's "TTL exhausted") fails the fragments of that slot only."""
    from redis.exceptions import NoScriptError

    if isinstance(error, NoScriptError):
        return error
    unavailable = NodeUnavailable(f"slot {command[0]} is moving: {error}")
    unavailable.__cause__ = error
    return unavailable


def _slot(key: str) -> int:
    from redis.crc import key_slot

    return int(key_slot(key.encode()))


class RedisClusterBackend:
    """A Redis Cluster shared by every process.

    ``get_many`` sends each node involved one packet (an ``MGET`` per hash
    slot), to all of them before reading any reply; ``read_claiming``, the
    first read of every lookup, does the same with a script per slot: a hit
    of a 50-card page is one round trip per node, made side by side.
    ``set_many``, ``add_many`` and ``write_releasing`` are one packet per
    node too.  ``incr`` is the same Lua script as
    :class:`~jinja_fragcache.RedisBackend`'s (one key: fine on a cluster).
    Nothing is ever unpickled.  Clients made here use short socket timeouts
    (0.5 s) and no retries, so that a dead node costs one short failure per
    *node_cooldown*.

    :param client: a ``redis.cluster.RedisCluster`` to use; made from *url*
        or *startup_nodes* when ``None``.
    :param async_client: a ``redis.asyncio.cluster.RedisCluster`` for async
        rendering.  When ``None``, one is made per event loop from *url* or
        *startup_nodes* (or *client*'s primaries), with *connection_kwargs*.
    :param url: ``redis://host:port`` of any node.
    :param startup_nodes: ``[("host", port), ...]``, any nodes of the cluster.
    :param node_cooldown: seconds a node that failed is left alone.
    :param near_cache: keep what is read and written in a near cache per
        primary, each kept coherent by a tracking connection to its node
        (:mod:`.cluster_near`): a hit whose keys are all held costs no
        round trip.
    :param near_cache_bytes: each node's near cache bound, keys plus values.
    :param name_shards: the hash slots over which the variants of one
        fragment name spread, each with its name counter (``invalidate_all``
        bumps them all, one packet per node).  1 puts every variant of a
        name on one node.  A change moves every entry to new keys (misses,
        never a stale hit).
    :param connection_kwargs: passed to the clients made here.
    """

    def __init__(
        self,
        client: redis.cluster.RedisCluster | None = None,
        *,
        async_client: redis.asyncio.cluster.RedisCluster | None = None,
        url: str | None = None,
        startup_nodes: Sequence[tuple[str, int]] | None = None,
        node_cooldown: float = 5.0,
        near_cache: bool = True,
        near_cache_bytes: int = DEFAULT_MAX_BYTES,
        name_shards: int = 16,
        **connection_kwargs: Any,
    ) -> None:
        redis_module = _import_redis()
        if client is None and url is None and not startup_nodes:
            raise ValueError("RedisClusterBackend needs a client, a url or nodes")
        if node_cooldown <= 0:
            raise ValueError("node_cooldown must be > 0")
        self._options = {**_DEFAULTS, **connection_kwargs, "decode_responses": False}
        self._url = url
        self._nodes = [(str(host), int(port)) for host, port in startup_nodes or ()]
        self.node_cooldown = node_cooldown
        #: The hash slots each fragment name's variants spread over (see
        #: :mod:`jinja_fragcache.keys`); the fragment cache reads it.
        self.name_shards = check_shards(name_shards)
        self._client = client
        self._client_lock = threading.Lock()
        self._async_client = async_client
        self._async_clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, redis.asyncio.cluster.RedisCluster
        ] = weakref.WeakKeyDictionary()
        #: Node name -> monotonic time until which it is left alone.
        self._down: dict[str, float] = {}
        #: A near cache per primary (see :mod:`.cluster_near`), or ``None``.
        self.near = (
            NodeNearCaches(self._tracking_connection, near_cache_bytes)
            if near_cache
            else None
        )
        #: Only the near caches count changes (:attr:`generation`).
        self.counts_changes = self.near is not None
        #: The server answered and refused the command, or one node is down
        #: while others answer: that request's error, not an outage.
        self.request_errors = (
            redis_module.ResponseError,
            redis_module.DataError,
            NodeUnavailable,
        )

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisClusterBackend:
        """Discover the cluster from one node, ``redis://host:port``."""
        return cls(url=url, **kwargs)

    @classmethod
    def from_startup_nodes(
        cls, nodes: Sequence[tuple[str, int]], **kwargs: Any
    ) -> RedisClusterBackend:
        """Discover the cluster from the first of *nodes* that answers."""
        return cls(startup_nodes=nodes, **kwargs)

    def __repr__(self) -> str:
        return f"<RedisClusterBackend {self._url or self._nodes or self._client!r}>"

    @property
    def generation(self) -> int | None:
        """The near caches' count of changes, while every one of them may
        answer; ``None`` without (see :mod:`jinja_fragcache.memo`)."""
        return None if self.near is None else self.near.generation

    def bind_prefix(self, prefix: str) -> None:
        """Keep the keys of a fragment cache with this *prefix* in the near
        caches; :class:`~jinja_fragcache.FragmentCache` calls it."""
        if self.near is not None:
            self.near.bind_prefix(*tracked_prefixes(prefix))

    def _tracking_connection(self, node: Any) -> TrackingConnection:
        """A new connection to *node* (sync or asyncio's) like the sync
        client's, in RESP2."""
        client: Any = self.client
        like = client.get_node(node_name=node.name) or client.get_default_node()
        pool = client.get_redis_connection(like).connection_pool
        kwargs = dict(pool.connection_kwargs)
        kwargs.update(host=node.host, port=node.port, protocol=2)
        kwargs.update(decode_responses=False, client_name=TRACKING_NAME)
        conn: TrackingConnection = pool.connection_class(**kwargs)
        return conn

    def _nodes_of(self, keys: Sequence[str], client: Any) -> list[Any] | None:
        """The primary of each key's slot, from the slot map (no I/O);
        ``None`` when the map has no node for one."""
        from redis.exceptions import SlotNotCoveredError

        manager = client.nodes_manager
        try:
            return [manager.get_node_from_slot(_slot(key)) for key in keys]
        except SlotNotCoveredError:
            return None

    def _plan(self, keys: Sequence[str], client: Any) -> NodePlan | None:
        """What the near caches hold of *keys*, when there are any."""
        if self.near is None:
            return None
        nodes = self._nodes_of(keys, client)
        return None if nodes is None else self.near.plan(keys, nodes)

    def _begin(self, keys: Sequence[str], client: Any) -> Writing:
        """Drop *keys* from the near caches before they are written."""
        if self.near is None or not keys:
            return None
        nodes = self._nodes_of(keys, client)
        if nodes is None:  # nothing on an unmapped slot is kept
            return None
        return self.near.begin_write(keys, nodes)

    def _end(
        self,
        writing: Writing,
        known: Mapping[str, tuple[bytes | None, float | None]] | None,
    ) -> None:
        if writing is not None:
            NodeNearCaches.end_write(writing, known)

    @property
    def client(self) -> redis.cluster.RedisCluster:
        """The sync client, made at first use: redis-py discovers the
        cluster when it is made, and a cluster that is down when the site
        starts must fail open like one that goes down later."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self) -> redis.cluster.RedisCluster:
        from redis.backoff import NoBackoff
        from redis.cluster import RedisCluster
        from redis.retry import Retry

        ClusterNode: Any = _import_redis().cluster.ClusterNode

        # No client-level retries: a failure fails open, it is not repeated.
        options = {"retry": Retry(NoBackoff(), 0), **self._options}
        if self._url is not None:
            return RedisCluster.from_url(self._url, **options)
        nodes = [ClusterNode(host, port) for host, port in self._nodes]
        return RedisCluster(startup_nodes=nodes, **options)

    # -- routing ---------------------------------------------------------------

    def _check(self, names: Sequence[str]) -> list[str]:
        """Raise :class:`NodeUnavailable` for a node left alone; return
        those of *names* due to be tried again (then the slot map is read
        again first: a replica may have taken their slots over)."""
        now = time.monotonic()
        due = []
        for name in names:
            until = self._down.get(name)
            if until is not None and now < until:
                raise NodeUnavailable(f"cluster node {name} is left alone for now")
            if until is not None:
                due.append(name)
        for name in due:
            # This request tries it again; the others keep leaving it alone.
            self._down[name] = now + self.node_cooldown
        return due

    def _settle(
        self,
        names: Sequence[str],
        failed: Mapping[str, BaseException],
        client: Any,
    ) -> None:
        """Record which nodes answered; raise for those that did not."""
        until = time.monotonic() + self.node_cooldown
        for name in names:
            if name in failed:
                self._down[name] = until
            else:
                self._down.pop(name, None)
        if not failed:
            return
        name, error = next(iter(failed.items()))
        primaries = {node.name for node in client.get_primaries()}
        if primaries <= set(self._down):
            raise error  # every primary: an outage
        raise NodeUnavailable(f"cluster node {name} failed: {error}") from error

    def _primaries(self) -> list[Any]:
        client: Any = self.client
        return list(client.get_primaries())

    def _group(self, nodes: Sequence[Any]) -> dict[str, tuple[Any, list[int]]]:
        groups: dict[str, tuple[Any, list[int]]] = {}
        for index, node in enumerate(nodes):
            groups.setdefault(node.name, (node, []))[1].append(index)
        return groups

    def _route(self, commands: Sequence[Command]) -> dict[str, tuple[Any, list[int]]]:
        from redis.exceptions import SlotNotCoveredError

        manager = self.client.nodes_manager
        try:
            groups = self._group([manager.get_node_from_slot(s) for s, _ in commands])
            due = self._check(list(groups))
            if due:
                try:
                    manager.initialize()
                except Exception:  # the probe finds out
                    return groups
                groups = self._group(
                    [manager.get_node_from_slot(s) for s, _ in commands]
                )
                self._check([name for name in groups if name not in due])
        except SlotNotCoveredError as exc:
            raise NodeUnavailable(str(exc)) from exc
        return groups

    def _execute(self, commands: Sequence[Command]) -> list[Any]:
        """Each command's reply, in order; one packet per node, every node
        written before any is read."""
        results = self._gather(commands)
        _raise_first(results)
        return results

    def _gather(
        self, commands: Sequence[Command], moved: list[int] | None = None
    ) -> list[Any]:
        """:meth:`_execute`, with each command's error reply in its place
        instead of raised (a node that failed still raises); the positions
        of the commands that were redirected go into *moved*."""
        groups = self._route(commands)
        client: Any = self.client
        failures = _failures()
        results: list[Any] = [None] * len(commands)
        failed: dict[str, BaseException] = {}
        held: list[tuple[str, Any, Any, list[int]]] = []
        clean: set[str] = set()
        try:
            for name, (node, indices) in groups.items():
                redis_node = client.get_redis_connection(node)
                try:
                    connection: Any = redis_node.connection_pool.get_connection()
                except failures as exc:
                    failed[name] = exc
                    continue
                held.append((name, redis_node, connection, indices))
                try:
                    connection.send_packed_command(
                        connection.pack_commands([commands[i][1] for i in indices])
                    )
                except failures as exc:
                    failed[name] = exc
            for name, redis_node, connection, indices in held:
                if name in failed:
                    continue
                try:
                    for i in indices:
                        results[i] = _reply(redis_node, connection, commands[i][1])
                except failures as exc:
                    failed[name] = exc
                else:
                    clean.add(name)
        finally:
            for name, redis_node, connection, _ in held:
                if name not in clean:  # replies may be left unread on it
                    connection.disconnect()
                redis_node.connection_pool.release(connection)
        for name, (_, indices) in groups.items():
            if name not in failed and any(
                isinstance(results[i], ClusterDown) for i in indices
            ):
                failed[name] = next(
                    results[i].error
                    for i in indices
                    if isinstance(results[i], ClusterDown)
                )
        self._settle(list(groups), failed, client)
        redirects = _redirects()
        for i, result in enumerate(results):
            if isinstance(result, redirects):
                # The slot moved (or is moving): redis-py follows MOVED and ASK.
                try:
                    results[i] = client.execute_command(*commands[i][1])
                except _redis_errors() as exc:
                    results[i] = _while_moving(commands[i], exc)
                if moved is not None:
                    moved.append(i)
        return results

    def _run_scripts(
        self, commands: Sequence[Command], moved: list[int] | None = None
    ) -> list[Any]:
        """Run ``EVALSHA`` *commands*; each that a node lacks the script
        for runs again as ``EVAL`` there alone (the others ran once)."""
        results = self._gather(commands, moved)
        again = _unloaded(results)
        if again:
            retried = self._gather([_as_eval(commands[i]) for i in again], moved)
            for i, result in zip(again, retried, strict=True):
                results[i] = result
        _raise_first(results)
        return results

    # -- sync ------------------------------------------------------------------

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        plan = self._plan(keys, self.client)
        if plan is None:
            commands, order = _reads(keys)
            return _values(keys, order, self._execute(commands))
        if not plan.missing:
            return plan.values
        assert self.near is not None
        missing = [keys[i] for i in plan.missing]
        commands, order = _ttl_reads(missing)
        fetched, moved = None, list[int]()
        try:
            replies = self._run_scripts(commands, moved)
            fetched = _by_position(plan.missing, _ttl_values(missing, order, replies))
        finally:
            values = self.near.complete(keys, plan, fetched, keep=not moved)
        return values

    def set(self, key: str, value: bytes, timeout: Timeout) -> None:
        self.set_many({key: value}, timeout)

    def set_many(self, mapping: Mapping[str, bytes], timeout: Timeout) -> None:
        if not mapping:
            return
        writing, known = self._begin(list(mapping), self.client), None
        try:
            self._execute(_sets(mapping, timeout, nx=False))
            known = {key: (value, timeout) for key, value in mapping.items()}
        finally:
            self._end(writing, known)

    def add(self, key: str, value: bytes, timeout: Timeout) -> bool:
        return self.add_many({key: value}, timeout)[0]

    def add_many(self, mapping: Mapping[str, bytes], timeout: Timeout) -> list[bool]:
        if not mapping:
            return []
        writing, known = self._begin(list(mapping), self.client), None
        try:
            results = self._execute(_sets(mapping, timeout, nx=True))
            added = [bool(ok) for ok in results]
            known = _added(mapping, added, timeout)
        finally:
            self._end(writing, known)
        return added

    def delete(self, key: str) -> None:
        writing = self._begin([key], self.client)
        try:
            self._execute([(_slot(key), ("DEL", key))])
        finally:
            self._end(writing, None)

    def incr(self, key: str, delta: int = 1) -> int | None:
        return self.incr_many([key], delta)[0]

    def incr_many(self, keys: Sequence[str], delta: int = 1) -> list[int | None]:
        """``incr`` of each key (creating none), one packet per node."""
        writing = self._begin(keys, self.client)
        try:
            results = self._run_scripts([_incr(key, delta) for key in keys])
        finally:
            self._end(writing, None)
        return [None if result is None else int(result) for result in results]

    def read_claiming(self, read: ClaimingRead) -> Claimed:
        """The first trip of a lookup: :data:`~.scripts.READ_CLAIMING` once
        per hash slot, each node's in one packet (see :func:`_claiming`), or
        none when the near caches hold every key (nothing is claimed then)."""
        keys = [*read.entries, *read.counters]
        plan = self._plan(keys, self.client)
        if plan is not None and not plan.missing:
            return Claimed(plan.values, [UNCLAIMED] * len(read.entries), {})
        token = read.new_version()
        commands, layout = _claiming(read, token, ttls=plan is not None)
        writing, replies = self._begin(read.locks, self.client), None
        moved: list[int] = []
        try:
            replies = self._run_scripts(commands, moved)
        finally:
            self._end(writing, None)
            claimed = self._claimed(read, layout, replies, token, plan, moved)
        assert claimed is not None  # else the scripts raised
        return claimed

    def _claimed(
        self,
        read: ClaimingRead,
        layout: Layout,
        replies: Sequence[Any] | None,
        token: bytes,
        plan: NodePlan | None,
        moved: list[int],
    ) -> Claimed | None:
        """The replies as a :class:`~.base.Claimed`, the near caches given
        what they may keep (``None``: the scripts failed, and so does this)."""
        claimed = pttls = None
        if replies is not None:
            claimed, pttls = _claimed(read, layout, replies, token)
        if plan is not None:
            assert self.near is not None
            fetched = None
            if claimed is not None and pttls is not None:
                fetched = {i: (claimed.values[i], pttls[i]) for i in plan.missing}
            self.near.complete(
                [*read.entries, *read.counters], plan, fetched, keep=not moved
            )
        return claimed

    def write_releasing(
        self,
        writes: Mapping[str, bytes],
        timeout: Timeout,
        locks: Sequence[str],
        token: bytes,
    ) -> None:
        """Store *writes* and release each lock still held by *token*:
        :data:`~.scripts.WRITE_RELEASING` once per hash slot."""
        commands = _writing(writes, timeout, locks, token)
        if not commands:
            return
        writing, known = self._begin([*writes, *locks], self.client), None
        try:
            self._run_scripts(commands)
            known = {key: (value, timeout) for key, value in writes.items()}
        finally:
            self._end(writing, known)

    def info(self) -> dict[str, int | None]:
        """Server figures summed over the primaries: keys, memory used and
        peak, keyspace hits/misses."""
        totals: dict[str, int | None] = dict.fromkeys(
            ("keys", "memory_used", "memory_peak", "hits", "misses"), 0
        )
        fields = {
            "memory_used": "used_memory",
            "memory_peak": "used_memory_peak",
            "hits": "keyspace_hits",
            "misses": "keyspace_misses",
        }
        for node in self._primaries():
            redis_node = self.client.get_redis_connection(node)
            info = redis_node.info()
            totals["keys"] = (totals["keys"] or 0) + int(redis_node.dbsize())
            for name, field in fields.items():
                totals[name] = (totals[name] or 0) + int(info.get(field, 0))
        return totals

    def close(self) -> None:
        if self.near is not None:
            self.near.close()
        if self._client is not None:
            self._client.close()

    # -- async -------------------------------------------------------------------

    def _make_async_client(self) -> redis.asyncio.cluster.RedisCluster:
        from redis.asyncio.cluster import ClusterNode, RedisCluster
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        options = {"retry": Retry(NoBackoff(), 0), **self._options}
        if self._url is not None:
            return RedisCluster.from_url(self._url, **options)
        nodes = self._nodes or [(n.host, n.port) for n in self._primaries()]
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            **options,
        )

    async def _aclient(self) -> redis.asyncio.cluster.RedisCluster:
        """The asyncio client of the running event loop, initialised."""
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = self._async_client or self._make_async_client()
            await client.initialize()
            self._async_clients[loop] = client
        return client

    async def _aroute(
        self, client: Any, commands: Sequence[Command]
    ) -> dict[str, tuple[Any, list[int]]]:
        from redis.exceptions import SlotNotCoveredError

        manager = client.nodes_manager
        try:
            groups = self._group([manager.get_node_from_slot(s) for s, _ in commands])
            due = self._check(list(groups))
            if due:
                try:
                    await manager.initialize()
                except Exception:  # the probe finds out
                    return groups
                groups = self._group(
                    [manager.get_node_from_slot(s) for s, _ in commands]
                )
                self._check([name for name in groups if name not in due])
        except SlotNotCoveredError as exc:
            raise NodeUnavailable(str(exc)) from exc
        return groups

    async def _aexecute(self, commands: Sequence[Command]) -> list[Any]:
        """Async :meth:`_execute`: the nodes are written and read side by side."""
        results = await self._agather(commands)
        _raise_first(results)
        return results

    async def _agather(
        self, commands: Sequence[Command], moved: list[int] | None = None
    ) -> list[Any]:
        """Async :meth:`_gather`."""
        client = await self._aclient()
        groups = await self._aroute(client, commands)
        failures = _failures()
        results: list[Any] = [None] * len(commands)
        replies = await asyncio.gather(
            *(
                _aone(node, [commands[i][1] for i in ix])
                for node, ix in groups.values()
            ),
            return_exceptions=True,
        )
        failed: dict[str, BaseException] = {}
        for (name, (_, indices)), reply in zip(groups.items(), replies, strict=True):
            if isinstance(reply, failures):
                failed[name] = reply
            elif isinstance(reply, BaseException):
                raise reply
            else:
                for i, result in zip(indices, reply, strict=True):
                    results[i] = result
                down = [r for r in reply if isinstance(r, ClusterDown)]
                if down:
                    failed[name] = down[0].error
        self._settle(list(groups), failed, client)
        redirects = _redirects()
        for i, result in enumerate(results):
            if isinstance(result, redirects):
                try:
                    results[i] = await client.execute_command(*commands[i][1])
                except _redis_errors() as exc:
                    results[i] = _while_moving(commands[i], exc)
                if moved is not None:
                    moved.append(i)
        return results

    async def _arun_scripts(
        self, commands: Sequence[Command], moved: list[int] | None = None
    ) -> list[Any]:
        """Async :meth:`_run_scripts`."""
        results = await self._agather(commands, moved)
        again = _unloaded(results)
        if again:
            retried = await self._agather([_as_eval(commands[i]) for i in again], moved)
            for i, result in zip(again, retried, strict=True):
                results[i] = result
        _raise_first(results)
        return results

    async def aget_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        plan = self._plan(keys, await self._aclient())
        if plan is None:
            commands, order = _reads(keys)
            return _values(keys, order, await self._aexecute(commands))
        if not plan.missing:
            return plan.values
        assert self.near is not None
        missing = [keys[i] for i in plan.missing]
        commands, order = _ttl_reads(missing)
        fetched, moved = None, list[int]()
        try:
            replies = await self._arun_scripts(commands, moved)
            fetched = _by_position(plan.missing, _ttl_values(missing, order, replies))
        finally:
            values = self.near.complete(keys, plan, fetched, keep=not moved)
        return values

    async def aset(self, key: str, value: bytes, timeout: Timeout) -> None:
        await self.aset_many({key: value}, timeout)

    async def aset_many(self, mapping: Mapping[str, bytes], timeout: Timeout) -> None:
        if not mapping:
            return
        writing, known = self._begin(list(mapping), await self._aclient()), None
        try:
            await self._aexecute(_sets(mapping, timeout, nx=False))
            known = {key: (value, timeout) for key, value in mapping.items()}
        finally:
            self._end(writing, known)

    async def aadd(self, key: str, value: bytes, timeout: Timeout) -> bool:
        return (await self.aadd_many({key: value}, timeout))[0]

    async def aadd_many(
        self, mapping: Mapping[str, bytes], timeout: Timeout
    ) -> list[bool]:
        if not mapping:
            return []
        writing, known = self._begin(list(mapping), await self._aclient()), None
        try:
            results = await self._aexecute(_sets(mapping, timeout, nx=True))
            added = [bool(ok) for ok in results]
            known = _added(mapping, added, timeout)
        finally:
            self._end(writing, known)
        return added

    async def adelete(self, key: str) -> None:
        writing = self._begin([key], await self._aclient())
        try:
            await self._aexecute([(_slot(key), ("DEL", key))])
        finally:
            self._end(writing, None)

    async def aincr(self, key: str, delta: int = 1) -> int | None:
        return (await self.aincr_many([key], delta))[0]

    async def aincr_many(self, keys: Sequence[str], delta: int = 1) -> list[int | None]:
        """Async :meth:`incr_many`."""
        writing = self._begin(keys, await self._aclient())
        try:
            results = await self._arun_scripts([_incr(key, delta) for key in keys])
        finally:
            self._end(writing, None)
        return [None if result is None else int(result) for result in results]

    async def aread_claiming(self, read: ClaimingRead) -> Claimed:
        """Async :meth:`read_claiming`."""
        client = await self._aclient()
        plan = self._plan([*read.entries, *read.counters], client)
        if plan is not None and not plan.missing:
            return Claimed(plan.values, [UNCLAIMED] * len(read.entries), {})
        token = read.new_version()
        commands, layout = _claiming(read, token, ttls=plan is not None)
        writing, replies = self._begin(read.locks, client), None
        moved: list[int] = []
        try:
            replies = await self._arun_scripts(commands, moved)
        finally:
            self._end(writing, None)
            claimed = self._claimed(read, layout, replies, token, plan, moved)
        assert claimed is not None  # else the scripts raised
        return claimed

    async def awrite_releasing(
        self,
        writes: Mapping[str, bytes],
        timeout: Timeout,
        locks: Sequence[str],
        token: bytes,
    ) -> None:
        """Async :meth:`write_releasing`."""
        commands = _writing(writes, timeout, locks, token)
        if not commands:
            return
        writing, known = self._begin([*writes, *locks], await self._aclient()), None
        try:
            await self._arun_scripts(commands)
            known = {key: (value, timeout) for key, value in writes.items()}
        finally:
            self._end(writing, known)

    async def aclose(self) -> None:
        """Close the asyncio client of the running loop."""
        client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None and client is not self._async_client:
            await client.aclose()


class ClusterDown:
    """A ``CLUSTERDOWN`` reply, kept apart from other error replies: it
    means the node serves nothing, not that this request was refused."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _reply(redis_node: Any, connection: Any, args: tuple[Any, ...]) -> Any:
    from redis.exceptions import ClusterDownError, ResponseError

    try:
        return redis_node.parse_response(connection, args[0])
    except ClusterDownError as exc:
        return ClusterDown(exc)
    except ResponseError as exc:  # this command's; the others still read
        return exc


async def _aone(node: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """One node's commands in one packet on one of its connections."""
    from redis.exceptions import ClusterDownError, ResponseError

    connection = node.acquire_connection()
    clean = False
    try:
        await connection.send_packed_command(connection.pack_commands(commands))
        results: list[Any] = []
        for args in commands:
            try:
                results.append(await node.parse_response(connection, args[0]))
            except ClusterDownError as exc:
                results.append(ClusterDown(exc))
            except ResponseError as exc:
                results.append(exc)
        clean = True
        return results
    finally:
        if not clean:  # replies may be left unread on it
            await connection.disconnect()
        node.release(connection)


def _raise_first(results: Sequence[Any]) -> None:
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _reads(keys: Sequence[str]) -> tuple[list[Command], list[list[int]]]:
    """One ``MGET`` per hash slot, and the positions in *keys* it reads."""
    by_slot: dict[int, list[int]] = {}
    for index, key in enumerate(keys):
        by_slot.setdefault(_slot(key), []).append(index)
    commands = [
        (slot, ("MGET", *(keys[i] for i in indices)))
        for slot, indices in by_slot.items()
    ]
    return commands, list(by_slot.values())


def _ttl_reads(keys: Sequence[str]) -> tuple[list[Command], list[list[int]]]:
    """:func:`_reads` for the near cache: :data:`~.scripts.READ_WITH_TTL`
    per hash slot, each value with its ``PTTL``."""
    commands, order = _reads(keys)
    return [
        (slot, ("EVALSHA", _READ_WITH_TTL_SHA, len(args) - 1, *args[1:]))
        for slot, args in commands
    ], order


def _ttl_values(
    keys: Sequence[str], order: list[list[int]], replies: list[Any]
) -> list[tuple[bytes | None, int]]:
    values: list[tuple[bytes | None, int]] = [(None, -2)] * len(keys)
    for indices, reply in zip(order, replies, strict=True):
        for i, pair in zip(indices, _with_ttls(reply), strict=True):
            values[i] = pair
    return values


def _by_position(
    positions: Sequence[int], fetched: Sequence[tuple[bytes | None, int]]
) -> dict[int, tuple[bytes | None, int]]:
    return dict(zip(positions, fetched, strict=True))


def _values(
    keys: Sequence[str], order: list[list[int]], replies: list[Any]
) -> list[bytes | None]:
    values: list[bytes | None] = [None] * len(keys)
    for indices, reply in zip(order, replies, strict=True):
        for i, value in zip(indices, reply, strict=True):
            values[i] = _as_bytes(value)
    return values


def _sets(mapping: Mapping[str, bytes], timeout: Timeout, *, nx: bool) -> list[Command]:
    px = _px(timeout)
    expiry: tuple[Any, ...] = () if px is None else ("PX", px)
    flag: tuple[str, ...] = ("NX",) if nx else ()
    return [
        (_slot(key), ("SET", key, value, *expiry, *flag))
        for key, value in mapping.items()
    ]


def _incr(key: str, delta: int) -> Command:
    return (_slot(key), ("EVALSHA", _INCR_SHA, 1, key, delta))


def _unloaded(results: Sequence[Any]) -> list[int]:
    """The positions of the replies that say the node lacks the script."""
    from redis.exceptions import NoScriptError

    return [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]


def _as_eval(command: Command) -> Command:
    slot, (_, sha, *rest) = command
    return slot, ("EVAL", _SOURCES[sha], *rest)


#: Per slot: the positions of its entries and of its counters in a read.
Layout = list[tuple[list[int], list[int]]]


def _claiming(
    read: ClaimingRead, token: bytes, *, ttls: bool = False
) -> tuple[list[Command], Layout]:
    """:data:`~.scripts.READ_CLAIMING` for each hash slot a read touches:
    there, its entries, their locks and its counters (keys of a slot, as a
    cluster requires).  Without the ``n`` flag: a counter of another slot
    that an entry records (a tag's, a nested fragment's) is not judged by
    the script but by the fragment cache, which claims the usual way what
    the script did not."""
    by_slot: dict[int, tuple[list[int], list[int]]] = {}
    for i, key in enumerate(read.entries):
        by_slot.setdefault(_slot(key), ([], []))[0].append(i)
    for j, key in enumerate(read.counters):
        by_slot.setdefault(_slot(key), ([], []))[1].append(j)
    px = _px(read.lock_timeout)
    commands: list[Command] = []
    for slot, (entries, counters) in by_slot.items():
        keys = [read.entries[i] for i in entries]
        keys += [read.locks[i] for i in entries]
        keys += [read.counters[j] for j in counters]
        flags, now = "t" if ttls else "", scripts.clock()
        options = (len(entries), int(read.claim_cold), px, flags, now, token)
        command = ("EVALSHA", _READ_CLAIMING_SHA, len(keys), *keys, *options)
        commands.append((slot, command))
    return commands, list(by_slot.values())


def _claimed(
    read: ClaimingRead, layout: Layout, replies: Sequence[Any], token: bytes
) -> tuple[Claimed, list[int]]:
    """The slots' replies (per entry its value, PTTL and claim, then per
    counter its value and PTTL) put back in the read's order, and each
    value's PTTL (``-1`` unless asked for)."""
    n = len(read.entries)
    values: list[bytes | None] = [None] * (n + len(read.counters))
    pttls = [-1] * len(values)
    claims = [UNCLAIMED] * n
    for (entries, counters), reply in zip(layout, replies, strict=True):
        for at, i in enumerate(entries):
            values[i] = _as_bytes(reply[3 * at] or None)
            pttls[i] = int(reply[3 * at + 1])
            claims[i] = int(reply[3 * at + 2])
        base = 3 * len(entries)
        for at, j in enumerate(counters):
            values[n + j] = _as_bytes(reply[base + 2 * at] or None)
            pttls[n + j] = int(reply[base + 2 * at + 1])
    return Claimed(values, claims, {}, token), pttls


def _writing(
    writes: Mapping[str, bytes],
    timeout: Timeout,
    locks: Sequence[str],
    token: bytes,
) -> list[Command]:
    """:data:`~.scripts.WRITE_RELEASING` for each hash slot: its entries
    stored, its locks released (a lock shares its entry's slot)."""
    by_slot: dict[int, tuple[list[str], list[str]]] = {}
    for key in writes:
        by_slot.setdefault(_slot(key), ([], []))[0].append(key)
    for key in locks:
        by_slot.setdefault(_slot(key), ([], []))[1].append(key)
    px = _px(timeout)
    expiry = "" if px is None else px
    return [
        (
            slot,
            (
                "EVALSHA",
                _WRITE_RELEASING_SHA,
                len(keys) + len(held),
                *keys,
                *held,
                expiry,
                token,
                *(writes[key] for key in keys),
            ),
        )
        for slot, (keys, held) in by_slot.items()
    ]
