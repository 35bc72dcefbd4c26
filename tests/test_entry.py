from __future__ import annotations

import pickle

import pytest

from jinja_fragcache.entry import CorruptEntryError, Entry


@pytest.mark.parametrize("template", ["", "page.html", "dir/a b\n%é.html", "-x"])
def test_entry_round_trips(template: str) -> None:
    entry = Entry("héllo\n<b>\x00", 1234.5, template, "abc", {"k:1": "1", "k:2": "2"})
    assert Entry.decode(entry.encode()) == entry


def test_never_expiring_entry_is_always_fresh() -> None:
    entry = Entry.decode(Entry("x", None).encode())
    assert entry.soft_expiry is None
    assert entry.is_fresh(1e12)


class Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (pytest.fail, ("a cache value was unpickled",))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"plain text",
        pickle.dumps(Boom()),
        b"!" + pickle.dumps(Boom()),
        b"FC1 ",
        b"FC1 -\nbody",
        b"FC1 soon - -\nbody",
        b"FC1 - - - key\nbody",
        b"FC1 - - - \xff\nbody",
        b"FC1 - - -\n\xff\xfe",
    ],
)
def test_anything_else_is_a_corrupt_entry(data: bytes) -> None:
    with pytest.raises(CorruptEntryError):
        Entry.decode(data)
