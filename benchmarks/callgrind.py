"""What the hand-run instruction tools share (:mod:`.hit_instructions`,
:mod:`.miss_instructions`): a probe script written to a file, and the
instructions a run of it executes, counted by callgrind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: A probe's environment: hashes that repeat from run to run, the project
#: importable.
ENV = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(ROOT)}


@contextmanager
def probe(source: str) -> Iterator[str]:
    """*source* in a file of its own, for the block: its path."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as file:
        file.write(source)
    try:
        yield file.name
    finally:
        os.unlink(file.name)


def instructions(script: str, *args: str) -> int:
    """The instructions that ``python script *args`` executes under
    ``valgrind --tool=callgrind``, in :data:`ENV`."""
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={folder}/callgrind.out",
                sys.executable,
                script,
                *args,
            ],
            capture_output=True,
            text=True,
            check=False,
            env=ENV,
            timeout=900,
        )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or not found:
        raise SystemExit(done.stderr[-3000:])
    return int(found.group(1))
