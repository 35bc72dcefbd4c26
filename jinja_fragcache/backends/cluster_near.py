"""The near cache on a Redis Cluster: one :class:`~jinja_fragcache.near.NearCache`
per primary, each kept coherent by a tracking connection to that node.

Redis sends an invalidation to the tracking connections *of the node* where
a key changed, so each primary gets its own tracking connection and its own
near cache, holding only the keys that node answered.  Everything
:mod:`jinja_fragcache.near` guarantees holds per node: a node whose tracking
connection drops is emptied and bypassed until tracking is back, while the
others keep answering.

When a slot moves (resharding, a failover), the keys leave the old node's
near cache: a migrated key is deleted there, which is an invalidation, and a
failed node's tracking connection drops.  A value that arrived through a
redirect (``MOVED``, ``ASK``) was answered by a node other than the one the
slot map named, and is not kept.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..near import NearCache, Plan, TrackingConnection, WriteToken

#: A write in flight, per node: its near cache and its token there.
WriteTokens = list[tuple[NearCache, WriteToken]]


class NodePlan:
    """What the near caches hold of one read, node by node."""

    __slots__ = ("values", "missing", "parts")

    def __init__(self, size: int) -> None:
        #: Every key's value, the local ones filled in.
        self.values: list[bytes | None] = [None] * size
        #: Positions still to read from the servers.
        self.missing: list[int] = []
        #: Per node: its near cache, the read's positions it holds, and its plan.
        self.parts: list[tuple[NearCache, list[int], Plan]] = []


class NodeNearCaches:
    """A :class:`~jinja_fragcache.near.NearCache` per node, made at first use.

    :param connect: makes a new, unconnected RESP2 tracking connection to a
        node (given its redis-py ``ClusterNode``).
    :param max_bytes: each node's bound.
    """

    def __init__(
        self, connect: Callable[[Any], TrackingConnection], max_bytes: int
    ) -> None:
        self._connect = connect
        self.max_bytes = max_bytes
        self._prefixes: list[str] = []
        self._nodes: dict[str, NearCache] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<NodeNearCaches {sorted(self._nodes)}>"

    def bind_prefix(self, *prefixes: str) -> None:
        with self._lock:
            self._prefixes += [p for p in prefixes if p not in self._prefixes]
            nears = list(self._nodes.values())
        for near in nears:
            near.bind_prefix(*prefixes)

    def of(self, node: Any) -> NearCache:
        """The near cache of *node*, made (and tracking started) at first use."""
        near = self._nodes.get(node.name)
        if near is None:
            with self._lock:
                near = self._nodes.get(node.name)
                if near is None:
                    near = NearCache(
                        lambda: self._connect(node),
                        max_bytes=self.max_bytes,
                        prefixes=self._prefixes,
                    )
                    self._nodes[node.name] = near
        return near

    @property
    def nodes(self) -> dict[str, NearCache]:
        return dict(self._nodes)

    @property
    def generation(self) -> int | None:
        """Changes whenever any node's near cache may answer otherwise (see
        :attr:`NearCache.generation`), and when a node is added; ``None``
        while any of them may not answer.  Near caches are never removed,
        so the sum of their counts only grows."""
        total = len(self._nodes)
        for near in list(self._nodes.values()):
            generation = near.generation
            if generation is None:
                return None
            total += generation
        return total

    def close(self) -> None:
        with self._lock:
            nears = list(self._nodes.values())
        for near in nears:
            near.close()

    # -- reads -----------------------------------------------------------------

    def plan(self, keys: Sequence[str], nodes: Sequence[Any]) -> NodePlan:
        """What the near caches of *nodes* (the node of each key) hold."""
        plan = NodePlan(len(keys))
        by_node: dict[str, tuple[Any, list[int]]] = {}
        for i, node in enumerate(nodes):
            by_node.setdefault(node.name, (node, []))[1].append(i)
        for node, indices in by_node.values():
            near = self.of(node)
            part = near.plan([keys[i] for i in indices])
            if part.values is None:  # bypassed: this node's keys all read
                plan.missing += indices
                continue
            for i, value in zip(indices, part.values, strict=True):
                plan.values[i] = value
            plan.missing += [indices[m] for m in part.missing]
            plan.parts.append((near, indices, part))
        plan.missing.sort()
        return plan

    def complete(
        self,
        keys: Sequence[str],
        plan: NodePlan,
        fetched: Mapping[int, tuple[bytes | None, int]] | None,
        *,
        keep: bool = True,
    ) -> list[bytes | None]:
        """Merge what the servers returned for ``plan.missing`` (by
        position: value and ``PTTL``); ``None``: the read failed, only
        release the keys.  With *keep* false (a reply came through a
        redirect, from a node the near caches do not know it by), nothing
        is kept."""
        values = plan.values
        if fetched is not None:
            for i, (value, _) in fetched.items():
                values[i] = value
        for near, indices, part in plan.parts:
            node_keys = [keys[i] for i in indices]
            asked = [indices[m] for m in part.missing]
            if fetched is None or not keep:
                near.complete(node_keys, part, None)
            else:
                near.complete(node_keys, part, [fetched[i] for i in asked])
        return values

    # -- writes ----------------------------------------------------------------

    def begin_write(self, keys: Sequence[str], nodes: Sequence[Any]) -> WriteTokens:
        by_node: dict[str, tuple[Any, list[str]]] = {}
        for key, node in zip(keys, nodes, strict=True):
            by_node.setdefault(node.name, (node, []))[1].append(key)
        return [
            (near, near.begin_write(node_keys))
            for near, node_keys in (
                (self.of(node), node_keys) for node, node_keys in by_node.values()
            )
        ]

    @staticmethod
    def end_write(
        tokens: WriteTokens,
        known: Mapping[str, tuple[bytes | None, float | None]] | None,
    ) -> None:
        for near, token in tokens:
            near.end_write(token, known)
