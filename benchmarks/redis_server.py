"""A private ``redis-server`` for one benchmark run, on a free loopback port.

TCP rather than a unix socket: it is what a site uses, and every peer
connects to it the same way.  No other server is ever touched.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


def db_url(base_url: str, db: int) -> str:
    """``redis://host:port`` plus database *db*."""
    return f"{base_url}/{db}"


def version() -> str:
    output = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=True
    ).stdout
    # "Redis server v=7.0.15 sha=..."
    return next(
        (word[2:] for word in output.split() if word.startswith("v=")), "unknown"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def redis_server() -> Iterator[str]:
    """Start a throwaway server; yield its base URL, ``redis://127.0.0.1:PORT``."""
    with started_server() as (url, _):
        yield url


@contextmanager
def started_server(
    under: Sequence[str] = (), seconds: float = 10
) -> Iterator[tuple[str, int]]:
    """:func:`redis_server`, run *under* a command (valgrind, say) when
    given, within *seconds* to answer; yield its base URL and its process
    id."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("the benchmarks need redis-server: apt-get install redis-server")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="fragcache-bench-") as folder:
        # Persistence off: nothing is written to disk while we time.
        command = [*under, binary, "--bind", "127.0.0.1", "--port", str(port)]
        command += ["--save", "", "--appendonly", "no", "--dir", folder]
        quiet = subprocess.DEVNULL if under else None  # valgrind talks
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=quiet)
        try:
            deadline = time.monotonic() + seconds
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        sys.exit(f"redis-server did not start on port {port}")
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}", process.pid
        finally:
            process.terminate()
            process.wait(30)
