"""The example site in a real headless Chromium: log in as staff, load and
reload a cached page, and see the stats page draw its chart."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .support import ROOT, gunicorn


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    env = {
        "DJANGO_SETTINGS_MODULE": "examples.site.settings",
        "EXAMPLE_DB": str(tmp_path / "site.sqlite3"),
        "REDIS_URL": "",  # the site's in-process cache
    }
    manage = [sys.executable, str(ROOT / "examples" / "site" / "manage.py")]
    for command in (["migrate", "-v0"], ["seed_demo"]):
        subprocess.run(
            [*manage, *command],
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
    with gunicorn("examples.site.wsgi:application", env) as base:
        yield base


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.fail(
            "The browser test needs Debian's chromium and chromium-driver "
            "(apt-get install chromium chromium-driver; .ci/run installs them)."
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_stats_page_draws_its_chart_in_a_real_browser(site: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    browser.get(site + "/login/")
    browser.find_element(By.NAME, "username").send_keys("staff")
    browser.find_element(By.NAME, "password").send_keys("demo")
    browser.find_element(By.TAG_NAME, "button").click()
    # Wait for the login to land before going on: a navigation now would
    # cancel the form's POST.
    WebDriverWait(browser, 10).until(lambda b: "/login/" not in b.current_url)
    browser.get(site + "/templates/sidebar/")
    browser.refresh()  # the second load is a hit
    assert browser.find_elements(By.CSS_SELECTOR, "nav.sidebar a")
    browser.get(site + "/cache/")
    chart = browser.find_element(By.ID, "hit-rate-chart")
    assert chart.size["width"] > 0 and chart.size["height"] > 0
    bars = chart.find_elements(By.CSS_SELECTOR, "rect.bar")
    widths = [float(bar.get_attribute("width")) for bar in bars]
    assert widths and max(widths) > 0  # the sidebar was hit once
    assert "fragment sidebar" in chart.text
