"""A private Redis Cluster for one benchmark run: three primaries, no
replicas, on free loopback ports.

Started the way ``tests/test_cluster.py`` starts one: three
``redis-server --cluster-enabled yes`` (persistence off), joined with
``redis-cli --cluster create``, then waited on until every node says
``cluster_state:ok``.  Every process started here is stopped at the end,
by its own handle, whatever happened.  No other server is ever touched.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

INSTALL = (
    "the cluster benchmark needs redis-server and redis-cli on the PATH: "
    "apt-get install redis-server (redis-cli comes with it, or with redis-tools)"
)
#: A node's cluster bus is its port + 10000, which must stay below 65536.
LOWEST_PORT, HIGHEST_PORT = 20000, 44999
PRIMARIES = 3


def check_installed() -> None:
    """Exit with what to install when a binary is missing (before a long run,
    not after it)."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        sys.exit(INSTALL)


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports(count: int) -> list[int]:
    """Free loopback ports whose cluster bus (port + 10000) is free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(LOWEST_PORT, HIGHEST_PORT)
        if port not in ports and _free(port) and _free(port + 10000):
            ports.append(port)
    return ports


def _ask(port: int, *command: str) -> str:
    """One command through redis-cli; its output, or "" if it failed."""
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *command],
        capture_output=True,
        text=True,
        check=False,
        timeout=5,
    )
    return done.stdout if done.returncode == 0 else ""


def _says(port: int, answer: str, *command: str) -> Callable[[], bool]:
    """A check: does the node's reply to *command* hold *answer*?"""
    return lambda: answer in _ask(port, *command)


def _wait(
    check: Callable[[], bool], what: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    deadline = time.monotonic() + 20
    while not check():
        for process in processes:
            if process.poll() is not None:
                sys.exit(
                    f"a cluster redis-server exited with status {process.returncode} "
                    f"({what}); {INSTALL}"
                )
        if time.monotonic() > deadline:
            sys.exit(f"the benchmark's Redis Cluster: {what} within 20 s")
        time.sleep(0.05)


@contextmanager
def redis_cluster() -> Iterator[list[int]]:
    """Start a throwaway three-primary cluster; yield its nodes' ports."""
    check_installed()
    binary = shutil.which("redis-server")
    ports = _ports(PRIMARIES)
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="fragcache-bench-cluster-") as folder:
        try:
            for port in ports:
                command = [str(binary), "--bind", "127.0.0.1", "--port", str(port)]
                command += ["--save", "", "--appendonly", "no", "--dir", folder]
                command += ["--cluster-enabled", "yes"]
                command += ["--cluster-config-file", str(Path(folder, f"{port}.conf"))]
                command += ["--cluster-require-full-coverage", "no"]
                processes.append(
                    subprocess.Popen(
                        command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
                    )
                )
            for port in ports:
                _wait(
                    _says(port, "PONG", "PING"),
                    f"redis-server on port {port} did not answer",
                    processes,
                )
            created = subprocess.run(
                ["redis-cli", "--cluster", "create"]
                + [f"127.0.0.1:{port}" for port in ports]
                + ["--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
            )
            if created.returncode:
                sys.exit(
                    "redis-cli --cluster create failed "
                    f"(status {created.returncode}):\n{created.stdout}{created.stderr}"
                )
            for port in ports:
                _wait(
                    _says(port, "cluster_state:ok", "CLUSTER", "INFO"),
                    f"node {port} did not reach cluster_state:ok",
                    processes,
                )
            yield ports
        finally:
            for process in processes:
                if process.poll() is None:
                    process.terminate()
            for process in processes:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
