"""``manage.py invalidate_fragment NAME [VARY ...] [--all] [--tag T ...]``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...api import invalidate_fragment, invalidate_fragments, invalidate_tags


class Command(BaseCommand):
    help = (
        "Invalidate one variant of a fragment (NAME VARY...), every variant "
        "(NAME --all), or every fragment carrying a tag (--tag T)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?", help="the fragment name")
        parser.add_argument("vary", nargs="*", help="vary values, compared by str()")
        parser.add_argument(
            "--all", action="store_true", help="every variant of NAME (O(1))"
        )
        parser.add_argument(
            "--tag",
            action="append",
            default=[],
            help="a tag to invalidate (repeatable)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name, vary, tags = options["name"], options["vary"], options["tag"]
        if options["all"] and vary:
            raise CommandError("--all clears every variant: give no VARY values")
        if not name and not tags:
            raise CommandError("give a fragment NAME, or --tag T")
        done = []
        if name:
            ok = (
                invalidate_fragments(name)
                if options["all"]
                else invalidate_fragment(name, *vary)
            )
            if not ok:
                raise CommandError(
                    f"could not invalidate {name!r}: the cache is unreachable "
                    "(see the log)"
                )
            what = (
                f"every variant of {name!r}" if options["all"] else f"{name!r} {vary}"
            )
            done.append(what)
        if tags:
            if not invalidate_tags(*tags):
                raise CommandError(
                    "could not invalidate the tags: the cache is unreachable"
                )
            done.append(f"tags {', '.join(tags)}")
        self.stdout.write(f"Invalidated {'; '.join(done)}.")
