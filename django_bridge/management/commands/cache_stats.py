"""``manage.py cache_stats [--json]``."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ...api import get_cache_stats


def _figure(value: object) -> str:
    return "n/a" if value is None else str(value)


class Command(BaseCommand):
    help = (
        "Show the fragment cache's hit rate, the server's keys and memory "
        "(Redis), and per-fragment counters added up over every web process."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        stats = get_cache_stats()
        if options["json"]:
            self.stdout.write(json.dumps(stats, indent=2, sort_keys=True))
            return
        self.stdout.write(
            f"hit rate {stats['hit_rate']:.1f}% ({stats['hits']} hits, "
            f"{stats['misses']} misses); keys {_figure(stats['keys'])}; memory "
            f"{_figure(stats['memory_used'])} bytes "
            f"(peak {_figure(stats['memory_peak'])})"
        )
        fragments = stats["fragments"]
        if not fragments:
            self.stdout.write("No fragment has been rendered yet.")
            return
        header = (
            "fragment",
            "hits",
            "misses",
            "stale",
            "hit %",
            "render ms",
            "fetch ms",
            "",
        )
        rows = [header]
        for name, f in sorted(fragments.items()):
            flag = "cheaper to render than to fetch" if f["cheaper_to_render"] else ""
            rows.append(
                (
                    name,
                    str(f["hits"]),
                    str(f["misses"]),
                    str(f["stale"]),
                    f"{f['hit_rate']:.1f}",
                    f"{f['avg_render_ms']:.3f}",
                    f"{f['avg_fetch_ms']:.3f}",
                    flag,
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        for row in rows:
            self.stdout.write(
                "  ".join(
                    cell.ljust(w) for cell, w in zip(row, widths, strict=True)
                ).rstrip()
            )
