"""Surrogate keys: derived from version counters, safe, and never cut off."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jinja_fragcache.keys import (
    make_fragment_key,
    name_version_key,
    tag_version_key,
    variant_version_key,
)
from jinja_fragcache.surrogates import (
    STYLES,
    HeaderStyle,
    folded_key,
    header_value,
    purge_keys,
    style_for,
    surrogate_key,
)

SAFE = re.compile(r"[a-z0-9-]{1,40}\Z")


def variant(name: str, *vary: object, prefix: str = "fragcache") -> str:
    return variant_version_key(make_fragment_key(name, vary, prefix=prefix))


def variants(name: str, count: int, prefix: str = "fragcache") -> list[str]:
    return [variant(name, i, prefix=prefix) for i in range(count)]


@given(st.text(), st.lists(st.text() | st.integers(), max_size=3))
def test_every_key_is_short_and_safe(name: str, vary: list[object]) -> None:
    counters = [
        variant(name, *vary),
        name_version_key(name),
        tag_version_key(name),
    ]
    for counter in counters:
        assert SAFE.match(surrogate_key(counter))
    folded = folded_key(counters[0])
    assert folded is not None and SAFE.match(folded)


def test_keys_name_their_kind_and_what_they_stand_for() -> None:
    assert surrogate_key(variant("card", 1)).startswith("v-card-")
    assert surrogate_key(name_version_key("card")).startswith("n-card-")
    assert surrogate_key(tag_version_key("Big Products!")).startswith("t-big-products-")
    assert str(folded_key(variant("card", 1))).startswith("nf-card-")
    assert folded_key(name_version_key("card")) is None
    assert folded_key(tag_version_key("card")) is None


def test_a_key_is_the_same_in_another_process() -> None:
    counter = variant("card", 7)
    code = (
        "from jinja_fragcache.surrogates import surrogate_key, folded_key;"
        f"print(surrogate_key({counter!r}), folded_key({counter!r}))"
    )
    # Another interpreter with another hash seed: no hash() in the key.
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    ).stdout.split()
    assert other == [surrogate_key(counter), folded_key(counter)]


def test_different_counters_get_different_keys() -> None:
    counters = [
        *variants("card", 50),
        name_version_key("card"),
        tag_version_key("card"),
        variant("card", 1, prefix="othersite"),
        name_version_key("card", prefix="othersite"),
    ]
    assert len({surrogate_key(c) for c in counters}) == len(counters)


def test_two_sites_on_one_cdn_do_not_share_keys() -> None:
    assert folded_key(variant("card", 1)) != folded_key(
        variant("card", 1, prefix="othersite")
    )
    assert folded_key(variant("card", 1)) == folded_key(variant("card", 2))


def test_a_counter_of_another_layout_still_gets_a_key() -> None:
    key = surrogate_key("not a counter key")
    assert SAFE.match(key) and key.startswith("x-")


def test_purging_a_variant_purges_its_folded_key_too() -> None:
    counter = variant("card", 1)
    assert purge_keys([counter]) == [surrogate_key(counter), folded_key(counter)]
    assert purge_keys([name_version_key("card")]) == [
        surrogate_key(name_version_key("card"))
    ]
    assert purge_keys([tag_version_key("nav"), tag_version_key("nav")]) == [
        surrogate_key(tag_version_key("nav"))
    ]


@pytest.mark.parametrize(
    ("header", "separator"), [("xkey", " "), ("Surrogate-Key", " "), ("Cache-Tag", ",")]
)
def test_each_style_has_its_separator(header: str, separator: str) -> None:
    counters = [variant("card", 1), name_version_key("card"), tag_version_key("nav")]
    value = header_value(style_for(header), counters)
    assert value == separator.join(map(surrogate_key, counters))


def test_an_unknown_style_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="xkey, Surrogate-Key, Cache-Tag"):
        style_for("X-Tags")


def test_a_page_without_fragments_has_no_keys() -> None:
    assert header_value(STYLES["xkey"], []) == ""


def test_repeated_counters_are_listed_once() -> None:
    counter = tag_version_key("nav")
    assert header_value(STYLES["xkey"], [counter, counter]) == surrogate_key(counter)


@pytest.mark.parametrize("header", ["Surrogate-Key", "Cache-Tag"])
def test_the_16_kb_limit_is_kept_by_folding(header: str) -> None:
    style = STYLES[header]
    assert style.max_header_bytes == 16384
    counters = [*variants("card", 1000), name_version_key("card")]
    unfolded = style.separator.join(map(surrogate_key, counters))
    assert len(unfolded) > 16384

    value = header_value(style, counters)

    assert value is not None and len(value.encode()) <= 16384
    assert value.split(style.separator) == [
        str(folded_key(counters[0])),
        surrogate_key(name_version_key("card")),
    ]


def test_fastly_refuses_a_key_over_1024_bytes() -> None:
    assert STYLES["Surrogate-Key"].max_key_bytes == 1024
    tiny = HeaderStyle("Surrogate-Key", " ", 16384, max_key_bytes=10)
    assert header_value(tiny, [tag_version_key("nav")]) is None


def test_the_names_with_most_variants_fold_first() -> None:
    cards = variants("card", 40)
    menus = variants("menu", 3)
    counters = [*cards, *menus]
    precise = " ".join(map(surrogate_key, counters))
    # Room for everything but the 40 cards one by one.
    style = HeaderStyle("xkey", " ", len(precise) - 1)

    value = header_value(style, counters)

    assert value is not None
    assert value.split() == [str(folded_key(cards[0])), *map(surrogate_key, menus)]


def test_every_counter_stays_covered_when_folded() -> None:
    counters = [*variants("card", 300), *variants("menu", 200), tag_version_key("x")]
    style = HeaderStyle("xkey", " ", 4000)

    value = header_value(style, counters)

    assert value is not None and len(value) <= 4000
    listed = set(value.split())
    for counter in counters:
        # Whatever invalidates it purges a key the page lists.
        assert listed & set(purge_keys([counter]))


def test_when_even_folded_keys_do_not_fit_the_answer_is_none() -> None:
    counters = [tag_version_key(f"tag-{i}") for i in range(1000)]
    # Tags cannot fold: 1,000 of them do not fit in 16 KB.
    assert header_value(STYLES["Cache-Tag"], counters) is None
    assert header_value(STYLES["xkey"], counters) is None


def test_a_header_is_never_cut_short() -> None:
    for count in range(1, 400, 7):
        counters = [tag_version_key(f"tag-{i}") for i in range(count)]
        value = header_value(STYLES["xkey"], counters)
        assert value is None or value.split() == list(map(surrogate_key, counters))


def test_the_core_module_never_imports_django() -> None:
    code = (
        "import sys, jinja_fragcache.surrogates;"
        "print(any(m.split('.')[0] == 'django' for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
