"""``manage.py warm_cache``: run the warming scopes and URLs, with progress.

warm_cache [--scope all|NAME ...] [--user-limit N] [--url PATH ...]
           [--concurrency N]
"""

from __future__ import annotations

import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...warming import Report, Task, run_task, tasks_for

logger = logging.getLogger("django_bridge")


class Command(BaseCommand):
    help = "Warm the caches: the registered scopes (@warmer) and/or URLs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--scope",
            action="append",
            default=[],
            help="a scope, or 'all' (repeatable; default all)",
        )
        parser.add_argument(
            "--user-limit",
            type=int,
            default=50,
            help="per-user scopes: the N most recently active users",
        )
        parser.add_argument(
            "--url", action="append", default=[], help="a path to request (repeatable)"
        )
        parser.add_argument(
            "--concurrency", type=int, default=1, help="tasks run at once"
        )
        parser.add_argument(
            "--no-progress", action="store_true", help="no progress bar"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["concurrency"] < 1 or options["user_limit"] < 0:
            raise CommandError(
                "--concurrency must be at least 1 and --user-limit at least 0"
            )
        scopes = options["scope"] or ([] if options["url"] else ["all"])
        try:
            tasks: list[Task] = [
                *tasks_for(scopes, user_limit=options["user_limit"]),
                *options["url"],
            ]
        except KeyError as exc:
            raise CommandError(str(exc.args[0])) from None
        report = Report()
        started = time.perf_counter()
        progress = _progress(len(tasks), enabled=not options["no_progress"])
        workers = options["concurrency"]
        # One at a time runs in this thread: no second database connection.
        pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
        try:
            results = pool.map(run_task, tasks) if pool else map(run_task, tasks)
            for result in results:
                report.results.append(result)
                if not result.ok:
                    logger.error("warming %s failed: %s", result.target, result.error)
                progress.update(1)
        finally:
            if pool:
                pool.shutdown()
            progress.close()
        elapsed = time.perf_counter() - started
        self.stdout.write(
            f"warmed {report.warmed}, failed {report.failed}, {elapsed:.2f} s"
        )
        for result in report.results:
            if not result.ok:
                self.stderr.write(f"  {result.target}: {result.error}")
        if report.failed:
            sys.exit(1)


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, *, enabled: bool) -> Any:
    if not enabled:
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:  # the summary still says everything
        return _NoProgress()
    return tqdm(total=total, desc="warming", unit="task", file=sys.stderr)
