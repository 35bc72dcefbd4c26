"""django-jinja's ``CacheExtension``: ``{% cache 300 "name" vary %}``.

It always uses Django's ``default`` cache alias, which is why each backend
kind is measured in a process of its own (see ``benchmarks/django_settings.py``).
"""

from __future__ import annotations

from jinja2 import Environment

from .base import FRAGMENT, TIMEOUT, Adapter, loop_around


class DjangoJinjaTag(Adapter):
    name = "django-jinja"

    def setup(self) -> None:
        from django_jinja.builtins.extensions import CacheExtension

        env = Environment(extensions=[CacheExtension])
        self.compile(
            env.from_string,
            f'{{% cache {TIMEOUT} "frag" uid %}}' + FRAGMENT + "{% endcache %}",
            loop_around(f'{{% cache {TIMEOUT} "card" item.id %}}', "{% endcache %}"),
        )
