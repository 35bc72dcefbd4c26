"""The pages every implementation renders, and the interface the timing drives.

Every adapter compiles the same three pages with its own cache tag:

- ``page``: a page shell around one cached ~2 KB fragment that varies on ``uid``;
- ``inline``: the same page with the fragment's content and no cache tag;
- ``cards``: 50 cached sibling cards (``cache_each`` for us, a ``for`` loop
  around the tag for the peers).

The cold page is ``cards`` again with 50 items never rendered before: every
card misses.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

SHELL = "<html><head><title>bench</title></head><body>{}</body></html>"
FRAGMENT = "<p>{{ body }}</p>"
CARD = "<div class='card'>{{ item.name }} {{ item.text }}</div>"
#: About 2 KB of text for the one fragment (no character that needs escaping,
#: so the autoescaping engines render the same HTML as the others).
BODY = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 36)[:2048]
CARDS = 50


def item(i: int) -> dict[str, Any]:
    return {"id": i, "name": f"item {i}", "text": "t" * 150}


ITEMS = [item(i) for i in range(CARDS)]
HIT_UID = 1
TIMEOUT = 300
#: Vary values for misses, far from HIT_UID and shared by every adapter: two
#: implementations that derive the same key (Django's tag and django-jinja's
#: both use ``make_template_fragment_key`` on the same cache) must never find
#: each other's entries.
_FRESH_UIDS = itertools.count(1_000_000)


def fresh_items() -> list[dict[str, Any]]:
    """50 cards with ids never used before, from the miss case's sequence."""
    return [item(next(_FRESH_UIDS)) for _ in range(CARDS)]


def cards_html(items: list[dict[str, Any]]) -> str:
    """What every implementation's ``cards`` page gives for *items*."""
    return SHELL.format(
        "".join(f"<div class='card'>{i['name']} {i['text']}</div>" for i in items)
    )


#: Every in-process cache holds this many entries before it culls, so the
#: miss case times each implementation's miss path, not its eviction policy.
MAX_ENTRIES = 100_000


class Template(Protocol):
    def render(self, context: dict[str, Any]) -> str: ...


def loop_around(open_tag: str, close_tag: str) -> str:
    """The peers' way to cache siblings: their tag inside a ``for`` loop."""
    return "{% for item in items %}" + open_tag + CARD + close_tag + "{% endfor %}"


class Adapter:
    """One implementation of fragment caching on one kind of backend.

    A subclass sets :attr:`name` (and :attr:`kinds` if it runs on one kind
    only), compiles its pages in :meth:`setup` with :meth:`compile`, and
    closes what it opened in :meth:`teardown`.

    :param kind: ``"memory"`` (the implementation's in-process cache) or
        ``"redis"``.
    :param redis_url: the benchmark's own server, database 0.
    """

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]] = ("memory", "redis")

    page: Template
    inline: Template
    cards: Template

    def __init__(self, kind: str, redis_url: str) -> None:
        self.kind = kind
        self.redis_url = redis_url

    def setup(self) -> None:
        raise NotImplementedError

    def teardown(self) -> None:
        """Close connections; nothing to do by default."""

    def compile(
        self, from_string: Callable[[str], Template], fragment: str, cards: str
    ) -> None:
        """Compile the three pages; *fragment* and *cards* go inside the shell."""
        self.page = from_string(SHELL.format(fragment))
        self.inline = from_string(SHELL.format(FRAGMENT))
        self.cards = from_string(SHELL.format(cards))

    def render_hit(self) -> str:
        return self.page.render({"uid": HIT_UID, "body": BODY})

    def render_miss(self) -> str:
        return self.page.render({"uid": next(_FRESH_UIDS), "body": BODY})

    def render_uncached(self) -> str:
        return self.inline.render({"body": BODY})

    def render_siblings(self) -> str:
        return self.cards.render({"items": ITEMS})

    def render_cold_cards(self, items: list[dict[str, Any]] | None = None) -> str:
        """The 50 cards with new ids (or *items*): every card a miss."""
        return self.cards.render({"items": fresh_items() if items is None else items})
