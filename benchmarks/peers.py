"""One adapter per implementation, all with the same small interface.

Each adapter renders the same three pages with its own tag:

- ``page(uid)``: a page shell around one cached ~2 KB fragment varying on uid;
- ``inline()``: the same page with the fragment's content and no cache tag;
- ``cards(items)``: 50 cached sibling cards (``cache_each`` for us, a loop
  around the cache tag for the peers).

Django must be configured (``worker.configure_django``) before this module is
imported: django-jinja's extension reads settings at import time.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment

SHELL = "<html><head><title>t</title></head><body>{}</body></html>"
FRAGMENT_BODY = "<p>{{ body }}</p>"
CARD_BODY = "<div class='card'>{{ item.name }} {{ item.text }}</div>"
#: About 2 KB of text for the one fragment.
BODY = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 36)[:2048]


def jinja_env(extension: Any, **attributes: Any) -> Environment:
    env = Environment(extensions=[extension])
    for name, value in attributes.items():
        setattr(env, name, value)
    return env


class Adapter:
    name = ""

    def __init__(self, name: str, page: Any, inline: Any, cards: Any) -> None:
        self.name = name
        self._page, self._inline, self._cards = page, inline, cards

    def page(self, uid: int) -> str:
        return str(self._page.render({"uid": uid, "body": BODY}))

    def inline(self) -> str:
        return str(self._inline.render({"body": BODY}))

    def cards(self, items: list[dict[str, object]]) -> str:
        return str(self._cards.render({"items": items}))


def ours(backend: Any) -> Adapter:
    from jinja_fragcache import FragmentCache, FragmentCacheExtension

    env = jinja_env(
        FragmentCacheExtension, fragment_cache=FragmentCache(backend, prefix="bench")
    )
    return _jinja_adapter(
        "jinja-fragcache",
        env,
        "{% cache_fragment 300 frag uid %}" + FRAGMENT_BODY + "{% endcache_fragment %}",
        "{% cache_each 300 card item in items item.id %}"
        + CARD_BODY
        + "{% endcache_each %}",
    )


def django_dtl() -> Adapter:
    from django.template import engines

    engine = engines["django"]
    page = engine.from_string(
        "{% load cache %}"
        + SHELL.format("{% cache 300 frag uid %}" + FRAGMENT_BODY + "{% endcache %}")
    )
    inline = engine.from_string(SHELL.format(FRAGMENT_BODY))
    cards = engine.from_string(
        "{% load cache %}"
        + SHELL.format(
            "{% for item in items %}{% cache 300 card item.id %}"
            + CARD_BODY
            + "{% endcache %}{% endfor %}"
        )
    )
    return Adapter("django", page, inline, cards)


def django_jinja() -> Adapter:
    from django_jinja.builtins.extensions import CacheExtension

    return _jinja_adapter(
        "django-jinja",
        jinja_env(CacheExtension),
        '{% cache 300 "frag" uid %}' + FRAGMENT_BODY + "{% endcache %}",
        "{% for item in items %}"
        '{% cache 300 "card" item.id %}' + CARD_BODY + "{% endcache %}{% endfor %}",
    )


def flask_caching(config: dict[str, Any]) -> tuple[Adapter, Any]:
    from flask import Flask
    from flask_caching import Cache
    from flask_caching.jinja2ext import CacheExtension

    app = Flask("bench")
    cache = Cache(app, config=config)
    env = jinja_env(CacheExtension, _template_fragment_cache=cache)
    adapter = _jinja_adapter(
        "flask-caching",
        env,
        # Flask-Caching crashes on an int vary value: its users add |string.
        '{% cache 300, "frag", uid|string %}' + FRAGMENT_BODY + "{% endcache %}",
        "{% for item in items %}"
        '{% cache 300, "card", item.id|string %}'
        + CARD_BODY
        + "{% endcache %}{% endfor %}",
    )
    return adapter, app.app_context()


def jinja_docs(cache: Any) -> Adapter:
    from .jinja_docs_example import DocsFragmentCacheExtension

    env = jinja_env(
        DocsFragmentCacheExtension, fragment_cache=cache, fragment_cache_prefix="docs:"
    )
    return _jinja_adapter(
        "jinja-docs",
        env,
        '{% cache "frag" ~ uid, 300 %}' + FRAGMENT_BODY + "{% endcache %}",
        '{% for item in items %}{% cache "card" ~ item.id, 300 %}'
        + CARD_BODY
        + "{% endcache %}{% endfor %}",
    )


def _jinja_adapter(name: str, env: Environment, fragment: str, cards: str) -> Adapter:
    return Adapter(
        name,
        env.from_string(SHELL.format(fragment)),
        env.from_string(SHELL.format(FRAGMENT_BODY)),
        env.from_string(SHELL.format(cards)),
    )
