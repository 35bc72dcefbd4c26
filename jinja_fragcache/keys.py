"""The one key scheme.

Every key this library writes is built here: fragment entries by
:func:`make_fragment_key`, and the version counters that invalidation bumps
by :func:`name_version_key`, :func:`tag_version_key` and
:func:`variant_version_key`.  The format is described in ``docs/design.md``.

Layout (``KEY_FORMAT`` is the ``2`` after the prefix)::

    fragcache:2:f:{sidebar}:3f0c...e2     a fragment entry
    fragcache:2:f:{sidebar}:3f0c...e2:v   that variant's version counter
    fragcache:2:n:{sidebar}:9ab1...07     the version counter of every "sidebar"
    fragcache:2:t:products:41d2...c8      the version counter of tag "products"

The braces are a Redis Cluster hash tag: a fragment's entries, their
counters and locks, and its name's counter share one hash slot, so that one
server-side script can read and claim them.  A tag's counter is shared by
many names and lives in a slot of its own.

With *shards* above 1 (``RedisClusterBackend(name_shards=16)``), the
variants of one name spread over that many slots, each with a name counter
of its own, which ``invalidate_all`` bumps together::

    fragcache:2:f:{sidebar.5}:3f0c...e2   shard 5 of the name
    fragcache:2:n:{sidebar.5}:9ab1...07   its name counter
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from .identity import DEFAULT_IDENTITY, VaryIdentity

#: Bumped whenever the layout of keys changes, so old and new never mix.
KEY_FORMAT = "2"

#: The longest key any function here returns.
MAX_KEY_LENGTH = 200

_PREFIX_RE = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
_UNSAFE_RE = re.compile(r"[^A-Za-z0-9._-]+")
_READABLE_NAME_LENGTH = 48


class FragmentCacheWarning(UserWarning):
    """Something that silently makes a fragment cache useless or unsafe."""


def _encode_parts(parts: Sequence[str]) -> bytes:
    """Length-prefix each part so that no separator can collide.

    ``("a:b",)`` becomes ``b"3:a:b"`` and ``("a", "b")`` becomes
    ``b"1:a1:b"``; decoding is unambiguous, so the encoding is injective.
    """
    # map() over a bound format: no Python code runs per part.
    text = "".join(map(_LENGTH_PREFIXED, map(len, parts), parts))
    if text.isascii():  # every part ASCII: its length in characters is in bytes
        return text.encode("ascii")
    chunks = []
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        chunks.append(b"%d:" % len(data))
        chunks.append(data)
    return b"".join(chunks)


#: A part's length and the part, as _encode_parts() joins them.
_LENGTH_PREFIXED = "{}:{}".format


def _digest(parts: Sequence[str]) -> str:
    # 160 bits of BLAKE2b: collisions are out of reach, and it is fast.
    # A copy of an empty one: cheaper than making one with its arguments.
    digest = _BLAKE2B_160.copy()
    digest.update(_encode_parts(parts))
    return digest.hexdigest()


_BLAKE2B_160 = hashlib.blake2b(digest_size=20)


def _readable(name: str) -> str:
    return _UNSAFE_RE.sub("_", name)[:_READABLE_NAME_LENGTH] or "_"


def check_prefix(prefix: str) -> str:
    """Return *prefix* if it can start a key, else raise :class:`ValueError`."""
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise ValueError(
            "fragment cache prefix must be 1-64 characters of [A-Za-z0-9._-], "
            f"got {prefix!r}"
        )
    return prefix


#: The longest vary (in characters, every tuple argument together) whose
#: result a :class:`SizeBoundedCache` keeps: an ``lru_cache`` holds what it
#: is given, so it must be bounded by size as well as by count.
CACHED_LENGTH = 512

_T = TypeVar("_T")


class SizeBoundedCache(Generic[_T]):
    """A memo of a function of vary values, bounded by count and by size: a
    call whose tuples of strings (the arguments in the slice *sized*) hold
    more than :data:`CACHED_LENGTH` characters in all is computed every time
    and never kept.  When full, it starts afresh: cheaper than keeping an order
    on every read, and what a page uses is kept again at its next render.

    Call :attr:`lookup` as the function itself: a plain function reading a
    dict (``lru_cache`` behind a size check cost a lookup as much as the
    key's hashing).  A dict's single operations are atomic, so threads
    need no lock here.
    """

    def __init__(self, function: Callable[..., _T], maxsize: int, sized: slice) -> None:
        kept: dict[tuple[Any, ...], _T] = {}
        # A slice: one way for one sized argument and several, measured
        # with no Python code per string.
        chain = itertools.chain.from_iterable

        @functools.wraps(function)
        def lookup(*args: Any) -> _T:
            found = kept.get(args)
            if found is None:
                found = function(*args)
                if sum(map(len, chain(args[sized]))) <= CACHED_LENGTH:
                    if len(kept) >= maxsize:
                        kept.clear()
                    kept[args] = found
            return found

        self._kept = kept
        #: *function*, memoized.
        self.lookup = lookup

    def __len__(self) -> int:
        return len(self._kept)


#: The kinds of key that share their name's hash slot.
_SLOTTED_KINDS = frozenset("fn")


@functools.lru_cache(maxsize=1024)
def _head(prefix: str, kind: str, name: str, shard: int | None = None) -> str:
    """Everything of a key but its digest: the same for every variant (of
    one *shard*)."""
    check_prefix(prefix)
    readable = _readable(name)
    if kind in _SLOTTED_KINDS:
        tag = readable if shard is None else f"{readable}.{shard}"
        readable = "{" + tag + "}"
    return f"{prefix}:{KEY_FORMAT}:{kind}:{readable}:"


def _shard(digest: str, shards: int) -> int | None:
    """The shard of the variant whose key ends in *digest*, ``None`` for one."""
    return None if shards == 1 else int(digest[:8], 16) % shards


def _build_key(prefix: str, kind: str, name: str, parts: tuple[str, ...]) -> str:
    """A key of a kind without shards: a tag's counter, statistics, headers."""
    return _head(prefix, kind, name) + _digest(parts)


#: Cached: a page asks for the same few keys on every request.
_key_memo = SizeBoundedCache(_build_key, maxsize=4096, sized=slice(3, 4))  # parts
_key = _key_memo.lookup


def vary_strings(
    vary_on: Iterable[object], identity: VaryIdentity | None = None
) -> tuple[str, ...]:
    """Vary values as the key sees them: see :mod:`jinja_fragcache.identity`.

    :raises RefusedVaryValue: for a value without a safe identity.
    """
    return (identity or DEFAULT_IDENTITY).strings(vary_on)


def make_fragment_key(
    name: str,
    vary_on: Iterable[object] = (),
    *,
    prefix: str = "fragcache",
    identity: VaryIdentity | None = None,
    shards: int = 1,
) -> str:
    """Return the cache key of fragment *name* for the values *vary_on*.

    The only key function: the Jinja tags, the Django tags, every
    ``invalidate_*`` helper and ``cache_key_for`` call it.  Plain vary values
    are compared by ``str()``, so ``42`` and ``"42"`` are the same variant;
    objects by their identity (:mod:`jinja_fragcache.identity`; *identity*
    holds the converters, a cache passes its own).  The key is
    deterministic across processes, injective over the name and the vary
    values' identities, at most 200 characters and made of
    ``[A-Za-z0-9._:{}-]`` only, so memcached takes it as it is.  *shards*
    spreads the variants of one name over that many hash slots (a
    cluster's ``name_shards``).

    >>> make_fragment_key("sidebar", [42])[:25]
    'fragcache:2:f:{sidebar}:f'

    :raises RefusedVaryValue: for a value without a safe identity.
    """
    return key_of(name, vary_strings(vary_on, identity), prefix=prefix, shards=shards)


def key_of(
    name: str, strings: tuple[str, ...], *, prefix: str = "fragcache", shards: int = 1
) -> str:
    """:func:`make_fragment_key` of vary values already made strings."""
    return variant_plan(prefix, name, strings, (), shards)[0]


#: A variant's entry key, the keys of the counters it depends on, both
#: together (what a lookup of that variant alone reads), and its lock key.
VariantPlan = tuple[str, tuple[str, ...], tuple[str, ...], str]


def _plan(
    prefix: str,
    name: str,
    strings: tuple[str, ...],
    tags: tuple[str, ...],
    shards: int,
) -> VariantPlan:
    """Every key a lookup of one variant touches, made in one call: each new
    variant makes one, and a call per key cost more than the hashing.  The
    entry key is :func:`key_of`'s, made only here; the others are those
    that :func:`variant_version_key`, :func:`name_version_key_of`,
    :func:`tag_version_key` and :func:`lock_key` give
    (``tests/test_keys.py`` checks)."""
    # The name goes first and the count second, so a vary value can never
    # pass for a name.
    digest = _digest((name, str(len(strings)), *strings))
    shard = None if shards == 1 else _shard(digest, shards)  # no call for one
    head, lock_head, name_counter = _variant_heads(prefix, name, shard)
    key = head + digest
    # What a lookup of this variant alone reads: the key, then its counters,
    # the first variant_version_key(key) without a call.
    read: tuple[str, ...] = (key, key + ":v", name_counter)
    if tags:
        read += _tag_counters(prefix, tags)
    return key, read[1:], read, lock_head + digest


def _tag_counters(prefix: str, tags: tuple[str, ...]) -> tuple[str, ...]:
    # A tag named twice is read once.
    return tuple([tag_version_key(tag, prefix=prefix) for tag in dict.fromkeys(tags)])


@functools.lru_cache(maxsize=1024)
def _variant_heads(prefix: str, name: str, shard: int | None) -> tuple[str, str, str]:
    """What the entry key and the lock key of every variant of *name* (in
    *shard*) start with, and their name's counter: a page has few names."""
    # lock_key() rewrites a key's head only: given the head, it gives the
    # lock keys' head.
    head = _head(prefix, "f", name, shard)
    return head, lock_key(head), _name_key(prefix, name, shard)


#: Cached: a page asks for the same few variants on every request.
_plans = SizeBoundedCache(_plan, maxsize=8192, sized=slice(2, 4))  # vary, tags
#: :func:`_plan`, memoized: what lookups and :func:`key_of` call.
variant_plan = _plans.lookup


def variant_version_key(fragment_key: str) -> str:
    """The counter that ``invalidate(name, *vary)`` bumps for one variant."""
    return fragment_key + ":v"


def name_version_key(
    name: str, *, prefix: str = "fragcache", shard: int | None = None
) -> str:
    """The counter that ``invalidate_all(name)`` bumps (of one *shard*)."""
    return _name_key(prefix, name, shard)


@functools.lru_cache(maxsize=1024)
def _name_key(prefix: str, name: str, shard: int | None) -> str:
    # Every miss builds it: a page has few names.
    return _head(prefix, "n", name, shard) + _digest((name,))


def name_version_keys(
    name: str, *, prefix: str = "fragcache", shards: int = 1
) -> list[str]:
    """Every counter that ``invalidate_all(name)`` bumps: one per shard."""
    if shards == 1:
        return [name_version_key(name, prefix=prefix)]
    return [name_version_key(name, prefix=prefix, shard=s) for s in range(shards)]


def name_version_key_of(
    name: str, fragment_key: str, *, prefix: str = "fragcache", shards: int = 1
) -> str:
    """The name counter of the variant whose entry key is *fragment_key*."""
    return _name_key(prefix, name, _shard(fragment_key[-40:], shards))


def check_shards(shards: object) -> int:
    """Return *shards* if it can spread a name's variants, else raise."""
    if type(shards) is not int or not 1 <= shards <= 1024:
        raise ValueError(f"name shards must be an int from 1 to 1024, got {shards!r}")
    return shards


def tag_version_key(tag: str, *, prefix: str = "fragcache") -> str:
    """The counter that ``invalidate_tags(tag)`` bumps."""
    return _key(prefix, "t", tag, (tag,))


def stats_key(name: str, *, prefix: str = "fragcache") -> str:
    """Where a process publishes its statistics (kind ``s``)."""
    return _key(prefix, "s", name, (name,))


def headers_key(name: str, path: str, *, prefix: str = "fragcache") -> str:
    """Where the request headers a cached view's responses vary on are kept."""
    return _key(prefix, "h", name, (name, path))


def lock_key(fragment_key: str) -> str:
    """The key whose holder re-renders an expired fragment: the entry's key
    with kind ``l`` in place of ``f`` (same hash slot), so that no near
    cache tracks it (see :data:`TRACKED_KINDS`)."""
    head, found, rest = fragment_key.partition(":f:")
    return f"{head}:l:{rest}" if found else fragment_key + ":lock"


#: The kinds of key that a near cache keeps, and so has Redis track: what
#: lookups read (entries and their counters, tags' counters, views'
#: headers).  Not locks (``l``), each set and deleted once per render, nor
#: statistics (``s``): tracked, every such write would send an invalidation
#: message to every process, for keys no near cache needs.
TRACKED_KINDS = "fnth"


def tracked_prefixes(prefix: str) -> tuple[str, ...]:
    """The key prefixes a near cache tracks for a fragment cache's *prefix*."""
    return tuple(f"{prefix}:{KEY_FORMAT}:{kind}:" for kind in TRACKED_KINDS)
