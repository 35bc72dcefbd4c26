"""Flask-Caching's Jinja extension: ``{% cache timeout, "name", vary... %}``.

Its key is ``"_".join(vary_on)``: an int vary value raises inside the tag,
which then renders uncached every time without a word (outside debug mode).
Its users write ``|string``, and so do we.
"""

from __future__ import annotations

from typing import Any

from .base import FRAGMENT, MAX_ENTRIES, TIMEOUT, Adapter, loop_around


class FlaskCachingTag(Adapter):
    name = "flask-caching"

    def setup(self) -> None:
        from flask import Flask
        from flask_caching import Cache

        config: dict[str, Any]
        if self.kind == "memory":
            config = {"CACHE_TYPE": "SimpleCache", "CACHE_THRESHOLD": MAX_ENTRIES}
        else:
            config = {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": self.redis_url}
        app = Flask("bench")
        Cache(app, config=config)  # adds the extension to app.jinja_env
        # The cache is looked up through current_app, as in a request.
        self._app_context = app.app_context()
        self._app_context.push()
        self.compile(
            app.jinja_env.from_string,
            f'{{% cache {TIMEOUT}, "frag", uid|string %}}'
            + FRAGMENT
            + "{% endcache %}",
            loop_around(
                f'{{% cache {TIMEOUT}, "card", item.id|string %}}', "{% endcache %}"
            ),
        )

    def teardown(self) -> None:
        self._app_context.pop()
