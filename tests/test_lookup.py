"""Reading entries: version counters as text (:func:`jinja_fragcache.lookup.texts`)."""

from __future__ import annotations

import pytest

from jinja_fragcache.lookup import texts


def test_counters_read_as_their_text() -> None:
    assert texts([b"12", b"-3", b"9" * 20]) == ["12", "-3", "9" * 20]


def test_no_counters_read_as_none() -> None:
    assert texts([]) == []


@pytest.mark.parametrize(
    "odd",
    [b"", b"1 2", b"12a", b"9" * 21, b"--1", b"1\n", b"\xd9\xa1", b" 1", b"1 "],
)
def test_what_is_not_a_counter_reads_as_missing_and_leaves_the_rest(odd: bytes) -> None:
    # Alone, first, last and between: a value holding a space must not
    # shift the others.
    assert texts([odd]) == [None]
    assert texts([odd, b"7"]) == [None, "7"]
    assert texts([b"7", odd]) == ["7", None]
    assert texts([b"7", odd, b"8"]) == ["7", None, "8"]


def test_a_missing_counter_reads_as_none_among_others() -> None:
    assert texts([b"1", None, b"2"]) == ["1", None, "2"]
