"""Prometheus metrics: the core's collector on its own registry, the bridge's
view and django-prometheus's, and the example site under gunicorn with two
workers on a Redis of the test's own, scraped once for both."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jinja_fragcache import FragmentCache, FragmentRequest
from jinja_fragcache.keys import stats_key
from jinja_fragcache.metrics import FragmentCacheCollector

from .support import ROOT, BrokenBackend, MakeEnv, free_port, render, template
from .test_imports import run

Samples = dict[tuple[str, str], float]


def samples(text: str) -> Samples:
    """``{(sample name, fragment label): value}`` of a scrape."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, sample.labels.get("fragment", "")] = sample.value
    return found


def scrape(source: FragmentCache | Any) -> Samples:
    registry = CollectorRegistry()
    registry.register(FragmentCacheCollector(source))
    return samples(generate_latest(registry).decode())


# -- the core's collector -------------------------------------------------------------


def test_hits_misses_renders_and_seconds_per_fragment(make_env: MakeEnv) -> None:
    env = make_env()
    cache = env.fragment_cache  # type: ignore[attr-defined]
    page = template(
        env,
        "{% cache_fragment 300 sidebar %}s{% endcache_fragment %}"
        "{% cache_each 300 card p in items p %}{{ p }}{% endcache_each %}",
    )
    for _ in range(3):
        assert render(page, items=[1, 2]) == "s12"
    found = scrape(cache)
    assert found["fragcache_hits_total", "sidebar"] == 2
    assert found["fragcache_misses_total", "sidebar"] == 1
    assert found["fragcache_renders_total", "sidebar"] == 1
    assert found["fragcache_fetches_total", "sidebar"] == 3
    assert found["fragcache_hits_total", "card"] == 4  # two items, twice
    assert found["fragcache_misses_total", "card"] == 2
    assert found["fragcache_renders_total", "card"] == 2
    assert found["fragcache_fetches_total", "card"] == 3  # one read per render
    for name in ("sidebar", "card"):
        assert found["fragcache_render_seconds_total", name] > 0
        assert found["fragcache_fetch_seconds_total", name] > 0
        assert found["fragcache_stale_total", name] == 0
        assert found["fragcache_errors_total", name] == 0
    assert found["fragcache_lost_invalidations_total", ""] == 0


def test_every_counted_figure_becomes_its_own_metric() -> None:
    figures = {
        "hits": 1,
        "misses": 2,
        "stale": 3,
        "errors": 4,
        "renders": 5,
        "render_seconds": 6.5,
        "fetches": 7,
        "fetch_seconds": 8.5,
    }
    found = scrape(
        lambda: {"box": figures, "(invalidations)": {"lost_invalidations": 9}}
    )
    for figure, value in figures.items():
        assert found[f"fragcache_{figure}_total", "box"] == value
    assert found["fragcache_lost_invalidations_total", ""] == 9
    # The invalidations' pseudo-fragment is not a fragment.
    assert not any(label == "(invalidations)" for _, label in found)


def test_garbage_figures_read_as_zero() -> None:
    found = scrape(lambda: {"box": {"hits": "many", "misses": True, "stale": None}})
    assert found["fragcache_hits_total", "box"] == 0
    assert found["fragcache_misses_total", "box"] == 0
    assert found["fragcache_stale_total", "box"] == 0


def test_errors_and_lost_invalidations_on_a_dead_backend() -> None:
    cache = FragmentCache(BrokenBackend(), prefix="t" + uuid.uuid4().hex[:12])
    assert cache.render(FragmentRequest("box", timeout=300), lambda: "x") == "x"
    assert cache.invalidate_tags("products") is False
    found = scrape(cache)
    assert found["fragcache_errors_total", "box"] == 1
    assert found["fragcache_lost_invalidations_total", ""] == 1


def test_a_namespace_of_ones_own() -> None:
    cache = FragmentCache()
    cache.render(FragmentRequest("box", timeout=300), lambda: "x")
    registry = CollectorRegistry()
    registry.register(FragmentCacheCollector(cache, namespace="shop_fragments"))
    assert (
        registry.get_sample_value("shop_fragments_misses_total", {"fragment": "box"})
        == 1
    )


def test_registering_does_not_read_the_figures() -> None:
    # The default REGISTRY describes a collector when it is registered: at
    # import or AppConfig.ready time, when the cache may not be reachable.
    def unreachable() -> dict[str, Any]:
        raise AssertionError("read at registration")

    registry = CollectorRegistry(auto_describe=True)
    registry.register(FragmentCacheCollector(unreachable))
    with pytest.raises(AssertionError, match="read at registration"):
        generate_latest(registry)


def test_the_metrics_module_imports_neither_django_nor_prometheus() -> None:
    code = (
        "import sys, jinja_fragcache.metrics;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'django', 'prometheus_client'}))"
    )
    assert run(code).strip() == "[]"


def test_without_prometheus_client_the_error_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from jinja_fragcache import FragmentCache\n"
        "from jinja_fragcache.metrics import FragmentCacheCollector\n"
        "try:\n"
        "    FragmentCacheCollector(FragmentCache())\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    assert 'pip install "jinja-fragcache[prometheus]"' in run(code)


# -- under Django -----------------------------------------------------------------------


@pytest.fixture
def site(settings: Any) -> str:
    settings.ROOT_URLCONF = "examples.site.urls"
    prefix = "m" + uuid.uuid4().hex[:10]
    settings.FRAGCACHE = {"KEY_PREFIX": prefix}
    return prefix


def render_box(times: int) -> None:
    from django.template import engines

    source = "<% cache_fragment 300 metrics_box %>x<% endcache_fragment %>"
    for _ in range(times):
        engines["jinja2"].from_string(source).render({})


def test_the_view_serves_every_process_added_up(site: str) -> None:
    from django.test import Client

    from django_bridge.stats import publish

    render_box(3)
    publish("worker-2", {"metrics_box": {"hits": 5, "misses": 1, "renders": 1}})
    response = Client().get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert "no-cache" in response["Cache-Control"]
    found = samples(response.content.decode())
    assert found["fragcache_hits_total", "metrics_box"] == 2 + 5
    assert found["fragcache_misses_total", "metrics_box"] == 1 + 1
    assert found["fragcache_renders_total", "metrics_box"] == 1 + 1


def test_the_view_answers_with_this_process_when_the_cache_is_down(
    settings: Any,
) -> None:
    from django.test import Client

    from .support import unreachable_redis_caches

    settings.ROOT_URLCONF = "examples.site.urls"
    settings.CACHES = unreachable_redis_caches()
    settings.FRAGCACHE = {"KEY_PREFIX": "m" + uuid.uuid4().hex[:10]}
    render_box(2)  # fails open: rendered twice, counted as errors
    response = Client().get("/metrics")
    assert response.status_code == 200
    assert (
        samples(response.content.decode())["fragcache_errors_total", "metrics_box"] > 0
    )


def test_django_prometheus_serves_the_site_figures(
    site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import prometheus_client
    from django.test import RequestFactory
    from django_prometheus.exports import ExportToDjangoView

    from django_bridge.metrics import register

    # A default registry of this test's own: the real one lives as long as
    # the interpreter.
    monkeypatch.setattr(
        prometheus_client, "REGISTRY", CollectorRegistry(auto_describe=True)
    )
    register()
    register()  # twice, as a reloaded AppConfig.ready would: no duplicate error
    render_box(2)
    response = ExportToDjangoView(RequestFactory().get("/metrics"))
    found = samples(response.content.decode())
    assert found["fragcache_hits_total", "metrics_box"] == 1
    assert found["fragcache_misses_total", "metrics_box"] == 1


# -- two gunicorn workers, one scrape ----------------------------------------------------


def http_get(port: int, path: str) -> str:
    """GET *path* over HTTP/1.0 and read until the worker closes the
    connection, which it does after ``request_finished`` (and so after it
    published its counters)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        return read_all(sock)


def read_all(sock: socket.socket) -> str:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    response = b"".join(chunks).decode()
    assert response.startswith("HTTP/1.0 200"), response[:300]
    return response.split("\r\n\r\n", 1)[1]


@pytest.fixture
def two_workers(
    tmp_path: Path, restartable_redis: tuple[str, Any]
) -> Iterator[tuple[int, str]]:
    """The example site on a Redis of this test's own, served by gunicorn
    with two sync workers; yields ``(port, redis URL)`` once both booted."""
    redis_url, _ = restartable_redis
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "examples.site.settings",
        "EXAMPLE_DB": str(tmp_path / "site.sqlite3"),
        "REDIS_URL": redis_url,
    }
    manage = [sys.executable, str(ROOT / "examples" / "site" / "manage.py")]
    subprocess.run(
        [*manage, "migrate", "-v0"], env=env, check=True, capture_output=True
    )
    subprocess.run([*manage, "seed_demo"], env=env, check=True, capture_output=True)
    binary = Path(sys.executable).with_name("gunicorn")
    if not binary.exists():
        pytest.fail('The server tests need gunicorn: pip install -e ".[test]"')
    port = free_port()
    log = tmp_path / "gunicorn.log"
    command = [str(binary), "--bind", f"127.0.0.1:{port}", "--workers", "2"]
    with log.open("w") as output:
        process = subprocess.Popen(
            [*command, "examples.site.wsgi:application"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        # Booted workers, not an answered request: a request now would be a
        # worker's first and publish early (at most every 5 s).
        deadline = time.monotonic() + 20
        while len(re.findall("Booting worker", log.read_text())) < 2:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not boot two workers:\n{log.read_text()}")
            time.sleep(0.05)
        yield port, redis_url
    finally:
        process.terminate()
        process.wait(10)


def test_one_scrape_counts_both_workers_renders(two_workers: tuple[int, str]) -> None:
    import redis

    port, redis_url = two_workers
    # A half-sent request holds one sync worker, so the next request is the
    # other's: it renders the cards page cold (misses); then the held worker
    # gets the rest of its request and renders the same page warm (hits).
    held = socket.create_connection(("127.0.0.1", port), timeout=20)
    with held:
        held.sendall(b"GET /cards/ HTTP/1.0\r\nHost: 127.0.0.1\r\n")
        http_get(port, "/cards/")
        held.sendall(b"\r\n")
        read_all(held)

    found = samples(http_get(port, "/metrics"))
    fragments = {label for name, label in found if name == "fragcache_misses_total"}
    assert fragments, "the cards page caches no fragment"
    for name in fragments:
        misses = found["fragcache_misses_total", name]
        # One worker's figures alone would show only misses or only hits.
        assert misses > 0, name
        assert found["fragcache_hits_total", name] == misses, name
        assert found["fragcache_renders_total", name] == misses, name

    # Both workers published under keys of their own: the registry, as the
    # bridge's native Redis backend stores it on django-redis's pool (JSON,
    # never a pickle, under the fragment cache's own prefix).
    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.get(stats_key("processes"))
    finally:
        client.close()
    assert raw is not None
    assert len(json.loads(raw)) == 2
