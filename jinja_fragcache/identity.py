"""The identity of vary values: what a key sees of each one.

The rule is "``str()`` for plain values; identity for objects":

- **Plain values** (``str``, ``int``, ``float``, ``Decimal``, ``UUID``,
  dates and times, ``bool``, ``None``) are keyed by ``str()``, as Django's
  ``{% cache %}`` does, so ``42`` and ``"42"`` are the same variant and a
  view can invalidate with a URL kwarg.
- **Objects** are keyed by an identity they declare: a converter registered
  for their type (:meth:`VaryIdentity.register`; the Django bridge
  registers models as ``app_label.model:pk``), or a ``__fragment_key__()``
  method.  An identity is marked apart from every plain string, so a user
  named ``"auth.user:1"`` can never pass for user 1.
- An object with neither is keyed by its own ``str()`` only if its type
  defines one, and that text names no memory address.  Otherwise (the
  default ``repr``, which CPython reuses once the object is freed) the value
  is *refused*: the fragment renders uncached, with a warning.
- An undefined template variable is refused too: as ``""`` it would make
  every visitor share one variant.
- Lists, tuples, sets and dicts are keyed by the identities of what they
  hold (sets and dicts in sorted order, so the key is the same in every
  process).
"""

from __future__ import annotations

import datetime
import decimal
import itertools
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from jinja2 import Undefined

#: Starts every string that is not a plain value's ``str()``.  A plain
#: string that happens to start with it is escaped, so the mapping from
#: values to strings stays injective.
MARK = "\x1f"
_OBJECT = MARK + "o:"  # an identity an object declared
_ESCAPED = MARK + "s:"  # a plain string that started with MARK
_CONTAINER = MARK + "c:"  # a list, tuple, set or dict of identities

_ADDRESS_REPR_RE = re.compile(r" at 0x[0-9A-Fa-f]+>")

PLAIN_TYPES: tuple[type, ...] = (
    str,
    int,
    float,
    bool,
    type(None),
    decimal.Decimal,
    uuid.UUID,
    datetime.date,
    datetime.time,
    datetime.timedelta,
)

#: ``converter(value)`` returns the value's identity, or ``None`` to refuse it.
Converter = Callable[[Any], "str | None"]


class RefusedVaryValue(ValueError):
    """A vary value that cannot be keyed safely.

    :param severe: true for a value that has no identity at all (a default
        ``repr``, a converter's refusal): a programming error, raised under
        ``debug``.  False for an undefined variable: only warned about.
    """

    def __init__(self, message: str, *, severe: bool = True) -> None:
        super().__init__(message)
        self.severe = severe


class MissingValue:
    """An undefined variable, as the Django tags hand it over (Jinja's own
    ``Undefined`` is recognised as it is)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<undefined {self.name}>"


def _plain(value: object) -> str:
    text = str(value)
    return _ESCAPED + text if text.startswith(MARK) else text


def _undefined(value: object) -> str:
    # Undefined answers every attribute with an error: read its own slot.
    if isinstance(value, MissingValue):
        name: str | None = value.name
    else:
        name = object.__getattribute__(value, "_undefined_name")
    raise RefusedVaryValue(
        f"vary value {name or '?'!r} is undefined: as '' it would make every "
        "visitor share one variant",
        severe=False,
    )


class VaryIdentity:
    """Turns vary values into the strings a key is made of.

    One per :class:`~jinja_fragcache.FragmentCache` (``cache.identity``),
    so each cache can learn the types of its application::

        cache.identity.register(Product, lambda p: f"product:{p.sku}")

    :func:`strings` is on every render's path; a value's type is resolved to
    its converter once, then looked up in a dict.
    """

    def __init__(self) -> None:
        self._registered: dict[type, Converter] = {}
        self._raw: dict[type, Callable[[Any], str]] = {}
        self._by_type: dict[type, Callable[[Any], str]] = {}
        self._lock = threading.Lock()
        self._as_is = True

    def register(self, kind: type, converter: Converter) -> None:
        """Key instances of *kind* (and its subclasses) by ``converter(value)``;
        ``None`` from the converter refuses the value."""
        with self._lock:
            self._registered[kind] = converter
            self._by_type = {}  # resolved anew, subclasses included
            self._as_is = self._takes_as_is()

    def register_raw(self, kind: type, converter: Callable[[Any], str]) -> None:
        """Like :meth:`register`, but *converter* returns a finished key
        string (from :meth:`string`, say: a proxy keyed by what it wraps),
        and raises :class:`RefusedVaryValue` to refuse."""
        with self._lock:
            self._raw[kind] = converter
            self._by_type = {}
            self._as_is = self._takes_as_is()

    def strings(self, values: Iterable[object]) -> tuple[str, ...]:
        """The key's view of *values*.

        :raises RefusedVaryValue: for a value without a safe identity.
        """
        by_type = self._by_type
        if type(values) is not list and type(values) is not tuple:
            values = tuple(values)  # read twice when a type is new
        if self._as_is and _keyed_as_they_are(values):  # no converter call
            return tuple([str(value) for value in values])
        try:  # every type seen before: the common case, kept cheap
            converters = [by_type[type(value)] for value in values]
        except KeyError:
            converters = [
                by_type.get(type(value)) or self._resolve(type(value))
                for value in values
            ]
        return tuple(
            [convert(value) for convert, value in zip(converters, values, strict=True)]
        )

    def memo_view(
        self, values: Sequence[object], items: bool = False
    ) -> tuple[object, ...]:
        """*values* as the memo of checked hits is keyed by them: as they
        are when every one is an ``int``, or a ``str`` that the key takes as
        it is (then they tell their variants apart themselves, with no need
        of :meth:`strings`); with *items* (a ``cache_each`` page's values,
        a tuple per item), when every one is a tuple of such; else
        :meth:`strings`.

        :raises RefusedVaryValue: as :meth:`strings`.
        """
        if self._as_is and (
            _keyed_as_they_are(values) or (items and _plain_tuples(values))
        ):
            return tuple(values)
        return self.strings(values)

    def _takes_as_is(self) -> bool:
        return self._converter_for(int) is _plain and self._converter_for(str) is _plain

    def string(self, value: object) -> str:
        """The key's view of one value; see :meth:`strings`."""
        return self.strings((value,))[0]

    def _resolve(self, kind: type) -> Callable[[Any], str]:
        convert = self._converter_for(kind)
        with self._lock:
            self._by_type[kind] = convert
        return convert

    def _converter_for(self, kind: type) -> Callable[[Any], str]:
        if issubclass(kind, Undefined | MissingValue):
            return _undefined
        for base in kind.__mro__:
            raw = self._raw.get(base)
            if raw is not None:
                return raw
            registered = self._registered.get(base)
            if registered is not None:
                return self._declared(registered)
        if issubclass(kind, PLAIN_TYPES):
            return _plain
        method = getattr(kind, "__fragment_key__", None)
        if callable(method):
            return self._declared(lambda value: value.__fragment_key__())
        if issubclass(kind, list | tuple):
            return lambda value: self._container("l", self.strings(value))
        if issubclass(kind, set | frozenset):
            return lambda value: self._container("s", sorted(self.strings(value)))
        if issubclass(kind, dict):
            return self._dict
        if kind.__str__ is object.__str__ and kind.__repr__ is object.__repr__:
            return _no_identity
        return _own_str

    def _declared(self, converter: Converter) -> Callable[[Any], str]:
        def convert(value: object) -> str:
            found = converter(value)
            if found is None:
                raise RefusedVaryValue(
                    f"vary value {_short(value)} was refused by its converter"
                )
            if not isinstance(found, str):
                raise RefusedVaryValue(
                    f"the identity of vary value {_short(value)} must be a "
                    f"string, got {found!r}"
                )
            return _OBJECT + found

        return convert

    def _dict(self, value: dict[Any, Any]) -> str:
        items = sorted(
            zip(self.strings(value), self.strings(value.values()), strict=True)
        )
        return self._container("d", [part for item in items for part in item])

    @staticmethod
    def _container(kind: str, parts: Iterable[str]) -> str:
        # Length-prefixed, as keys are, so no part can pass for two.
        return _CONTAINER + kind + "".join(f"{len(p)}:{p}" for p in parts)


def _keyed_as_they_are(values: Sequence[object]) -> bool:
    """Whether every value is an ``int`` or a ``str`` that the key takes as
    its ``str()`` (one starting with :data:`MARK` is escaped), where the
    converters of ints and strs are the plain one (``_as_is``)."""
    for value in values:
        kind = type(value)
        # A str starting with MARK is escaped by the key.
        if kind is not int and (kind is not str or value.startswith(MARK)):  # type: ignore[attr-defined]
            return False
    return True


def _plain_tuples(values: Sequence[object]) -> bool:
    """Whether every value is a tuple of values :func:`_keyed_as_they_are`:
    the vary values of a ``cache_each`` page's items, told in C but for the
    strs among them."""
    if not values or set(map(type, values)) != {tuple}:
        return False
    flat: list[object] = list(itertools.chain.from_iterable(values))  # type: ignore[arg-type]
    kinds = set(map(type, flat))
    return kinds == {int} or (kinds <= {int, str} and _keyed_as_they_are(flat))


def _no_identity(value: object) -> str:
    raise RefusedVaryValue(
        f"vary value {_short(value)} has no identity: its str() is the default "
        "repr, whose address CPython gives to the next object. Vary on a stable "
        "value such as an id, or give the type a __fragment_key__() method"
    )


def _own_str(value: object) -> str:
    text = str(value)
    if " at 0x" in text and _ADDRESS_REPR_RE.search(text):
        raise RefusedVaryValue(
            f"vary value {_short(value)} has no identity: its str() names a "
            "memory address. Vary on a stable value such as an id"
        )
    return _plain(text)


def _short(value: object) -> str:
    try:
        text = repr(value)
    except Exception:  # a repr that fails must not hide the real message
        text = f"<{type(value).__qualname__}>"
    return text if len(text) <= 80 else text[:77] + "..."


#: What :func:`~jinja_fragcache.keys.make_fragment_key` uses when it is
#: given no identity: the rules above, with no converters registered.
DEFAULT_IDENTITY = VaryIdentity()
