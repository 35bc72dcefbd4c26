from __future__ import annotations

import hashlib
import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jinja_fragcache import make_fragment_key
from jinja_fragcache.keys import (
    CACHED_LENGTH,
    MAX_KEY_LENGTH,
    SizeBoundedCache,
    _encode_parts,
    lock_key,
    name_version_key,
    name_version_keys,
    tag_version_key,
    variant_version_key,
)

SAFE = re.compile(r"[A-Za-z0-9._:{}-]+\Z")
names = st.text(min_size=1, max_size=300)
varies = st.lists(st.text(max_size=80), max_size=6)


def decode_parts(data: bytes) -> list[str]:
    """Invert _encode_parts: proof that the encoding is injective."""
    parts = []
    while data:
        length, _, rest = data.partition(b":")
        size = int(length)
        parts.append(rest[:size].decode("utf-8", "surrogatepass"))
        data = rest[size:]
    return parts


@given(st.lists(st.text(max_size=50), max_size=8))
def test_encoding_of_parts_can_be_decoded(parts: list[str]) -> None:
    assert decode_parts(_encode_parts(parts)) == parts


@given(names, varies, names, varies)
def test_distinct_inputs_give_distinct_keys(
    name_a: str, vary_a: list[str], name_b: str, vary_b: list[str]
) -> None:
    same = (name_a, tuple(vary_a)) == (name_b, tuple(vary_b))
    assert (
        make_fragment_key(name_a, vary_a) == make_fragment_key(name_b, vary_b)
    ) == same


@given(names, varies)
def test_keys_are_short_and_memcached_safe(name: str, vary: list[str]) -> None:
    for key in (
        make_fragment_key(name, vary, prefix="p" * 64),
        lock_key(make_fragment_key(name, vary, prefix="p" * 64)),
        variant_version_key(make_fragment_key(name, vary)),
        name_version_key(name),
        tag_version_key(name),
    ):
        assert len(key) <= MAX_KEY_LENGTH
        assert SAFE.match(key), key


def test_separators_in_values_do_not_collide() -> None:
    # Django and Flask-Caching both collide on these.
    assert make_fragment_key("f", ["a:b"]) != make_fragment_key("f", ["a", "b"])
    assert make_fragment_key("f", ["a.b"]) != make_fragment_key("f", ["a", "b"])
    assert make_fragment_key("f:a", []) != make_fragment_key("f", ["a"])
    assert make_fragment_key("f", [""]) != make_fragment_key("f", [])


def test_vary_values_compare_by_str() -> None:
    assert make_fragment_key("card", [42]) == make_fragment_key("card", ["42"])
    assert make_fragment_key("card", [None]) == make_fragment_key("card", ["None"])


def test_key_is_readable_and_versioned() -> None:
    key = make_fragment_key("product sidebar/é", [1], prefix="site")
    assert key.startswith("site:2:f:{product_sidebar_}:")


def test_key_format_is_the_documented_one() -> None:
    # docs/design.md: BLAKE2b-160 of the length-prefixed (name, count, *vary).
    # A change here orphans every entry in production: bump KEY_FORMAT.
    encoded = b"7:sidebar" + b"1:2" + b"2:42" + b"2:en"
    digest = hashlib.blake2b(encoded, digest_size=20).hexdigest()
    assert (
        make_fragment_key("sidebar", [42, "en"])
        == f"fragcache:2:f:{{sidebar}}:{digest}"
    )
    assert digest == "7f8225a2646c51c0257ddc626bb919fbcb763132"


def test_key_is_the_same_in_another_process() -> None:
    code = (
        "from jinja_fragcache import make_fragment_key as k;"
        "print(k('sidebar', [42, 'en']))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    )
    assert other.stdout.strip() == make_fragment_key("sidebar", [42, "en"])


@pytest.mark.parametrize("prefix", ["", "has space", "colon:", "x" * 65, "é"])
def test_bad_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        make_fragment_key("a", prefix=prefix)


@given(
    names,
    varies,
    st.lists(st.text(max_size=20), max_size=3),
    st.sampled_from([1, 16, 64]),
)
def test_a_fragments_keys_share_one_hash_slot_and_tags_have_their_own(
    name: str, vary: list[str], tags: list[str], shards: int
) -> None:
    # Redis Cluster: one script reads and claims what a lookup of one
    # fragment needs, which it may only do within one slot.
    from redis.crc import key_slot

    from jinja_fragcache.keys import name_version_key_of

    key = make_fragment_key(name, vary, shards=shards)
    counter = name_version_key_of(name, key, shards=shards)
    slotted = [key, variant_version_key(key), lock_key(key), counter]
    assert len({key_slot(k.encode()) for k in slotted}) == 1
    # The name's counters are one per shard, and invalidate_all bumps them
    # all: this variant's is one of them.
    assert counter in name_version_keys(name, shards=shards)
    assert len(set(name_version_keys(name, shards=shards))) == shards
    for tag in tags:
        assert "{" not in tag_version_key(tag)  # spread by its whole key


@given(
    names,
    varies,
    st.lists(st.text(max_size=20), max_size=3),
    st.sampled_from([1, 16]),
    st.sampled_from(["fragcache", "site.2"]),
)
def test_a_lookups_keys_are_the_key_functions(
    name: str, vary: list[str], tags: list[str], shards: int, prefix: str
) -> None:
    # A lookup makes a variant's keys in one call (variant_plan), from the
    # vary values as the key sees them; they are the ones the key
    # functions give, which invalidation and cache_key_for use.
    from jinja_fragcache.keys import name_version_key_of, variant_plan, vary_strings

    key = make_fragment_key(name, vary, prefix=prefix, shards=shards)
    counters = (
        variant_version_key(key),
        name_version_key_of(name, key, prefix=prefix, shards=shards),
        *dict.fromkeys(tag_version_key(tag, prefix=prefix) for tag in tags),
    )
    plan = variant_plan(prefix, name, vary_strings(vary), tuple(tags), shards)
    assert plan == (key, counters, (key, *counters), lock_key(key))


@pytest.mark.parametrize(
    ("name", "vary", "shards", "key", "name_counter"),
    [
        (
            "sidebar",
            (42, "en"),
            1,
            "fragcache:2:f:{sidebar}:7f8225a2646c51c0257ddc626bb919fbcb763132",
            "fragcache:2:n:{sidebar}:4d5d182caeff75e99b1a6e633a553703a0379f53",
        ),
        (
            "menü",
            ("é", "日本"),
            1,
            "fragcache:2:f:{men_}:54eba14fe5af068c7fb5e134dd60c6268b289cd9",
            "fragcache:2:n:{men_}:e56fbe8cfb58d69a428fe3674f2ef272c9459e48",
        ),
        (
            "card",
            (),
            1,
            "fragcache:2:f:{card}:ee78889b88bf1c5933eacf8c1d01c09081e79b1d",
            "fragcache:2:n:{card}:8ce1188447b5376c64f9f35c7063ba77c082c78f",
        ),
        (
            "card",
            (7,),
            16,
            "fragcache:2:f:{card.12}:bcbe700c05014b6795f492482a90695749cc3943",
            "fragcache:2:n:{card.12}:8ce1188447b5376c64f9f35c7063ba77c082c78f",
        ),
    ],
)
def test_a_lookups_keys_are_the_ones_in_production(
    name: str, vary: tuple[object, ...], shards: int, key: str, name_counter: str
) -> None:
    # Entries and counters that earlier versions wrote (KEY_FORMAT 2): the
    # one-call plan and the key functions both still find them, to the byte.
    from jinja_fragcache.keys import name_version_key_of, variant_plan, vary_strings

    tag = "fragcache:2:t:products:4269abd704aba176835c3940303cc4e047a876bd"
    assert tag_version_key("products") == tag
    assert make_fragment_key(name, vary, shards=shards) == key
    assert name_version_key_of(name, key, shards=shards) == name_counter
    assert name_counter in name_version_keys(name, shards=shards)
    counters = (key + ":v", name_counter)
    lock = key.replace(":f:", ":l:", 1)
    strings = vary_strings(vary)
    assert variant_plan("fragcache", name, strings, (), shards) == (
        key,
        counters,
        (key, *counters),
        lock,
    )
    tagged = (*counters, tag)
    assert variant_plan("fragcache", name, strings, ("products",) * 2, shards) == (
        key,
        tagged,
        (key, *tagged),
        lock,
    )


@given(names, varies, st.sampled_from(["fragcache", "site.2"]))
def test_near_caches_track_what_lookups_read_and_not_locks_or_statistics(
    name: str, vary: list[str], prefix: str
) -> None:
    # A tracked key's every write sends an invalidation message to every
    # process; a render sets and deletes its lock once each.
    from jinja_fragcache.keys import headers_key, stats_key, tracked_prefixes

    tracked = tracked_prefixes(prefix)
    key = make_fragment_key(name, vary, prefix=prefix)
    read = [
        key,
        variant_version_key(key),
        name_version_key(name, prefix=prefix),
        tag_version_key(name, prefix=prefix),
        headers_key(name, "/path", prefix=prefix),
    ]
    assert all(k.startswith(tracked) for k in read)
    lock = lock_key(key)
    assert not lock.startswith(tracked)
    assert not stats_key(name, prefix=prefix).startswith(tracked)
    assert lock.startswith(f"{prefix}:2:l:")
    assert lock not in read
    # No tracked prefix covers another: Redis refuses overlapping ones.
    assert not any(a != b and a.startswith(b) for a in tracked for b in tracked)


def test_without_shards_every_variant_shares_the_names_slot() -> None:
    from redis.crc import key_slot

    slots = {key_slot(make_fragment_key("card", [i]).encode()) for i in range(50)}
    assert slots == {key_slot(name_version_key("card").encode())}


def test_shards_spread_one_names_variants() -> None:
    from redis.crc import key_slot

    keys = [make_fragment_key("card", [i], shards=16) for i in range(200)]
    assert len({key_slot(k.encode()) for k in keys}) == 16
    # The same variant has the same key whatever else is cached.
    assert make_fragment_key("card", [7], shards=16) == keys[7]
    assert keys[7].startswith("fragcache:2:f:{card.")


def test_a_key_memo_is_bounded_by_count_and_by_size() -> None:
    calls: list[tuple[str, ...]] = []

    def build(name: str, vary: tuple[str, ...]) -> str:
        calls.append(vary)
        return name + "".join(vary)

    memo = SizeBoundedCache(build, maxsize=3, sized=slice(1, 2))
    for i in range(3):
        assert memo.lookup("n", (str(i),)) == f"n{i}"
    assert memo.lookup("n", ("0",)) == "n0" and len(calls) == 3  # kept
    memo.lookup("n", ("3",))  # a fourth: it starts afresh, then keeps it
    assert len(memo) == 1
    memo.lookup("n", ("0",))
    assert len(calls) == 5
    long = ("x" * (CACHED_LENGTH + 1),)
    memo.lookup("n", long)
    memo.lookup("n", long)
    assert calls[-2:] == [long, long] and len(memo) == 2
