"""The example site in a real headless Chromium: logging in lands on the
index, the stylesheet applies, the panel shows a HIT on reload and what
"Change the data" re-rendered, and the stats page draws its chart.

The screenshots in docs/ are taken here, so they show the site as it is."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .support import ROOT
from .test_example_site import served_site

SCREENSHOTS = ROOT / "docs"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    with served_site(tmp_path) as (base, _):  # the site's in-process cache
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
        "--window-size=1280,1000",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def log_in(browser: Any, site: str, username: str) -> None:
    """Log in through the form; return once the login has landed (a
    navigation before that would cancel the form's POST)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    browser.get(site + "/login/")
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys("demo")
    browser.find_element(By.CSS_SELECTOR, "main button").click()
    WebDriverWait(browser, 10).until(lambda b: "/login/" not in b.current_url)


def panel(browser: Any) -> list[tuple[str, str]]:
    """The panel's rows as the browser shows them: (name, OUTCOME)."""
    from selenium.webdriver.common.by import By

    rows = browser.find_elements(By.CSS_SELECTOR, "#fragment-panel tbody tr")
    cells = [row.find_elements(By.TAG_NAME, "td") for row in rows]
    return [(tds[0].text, tds[1].text) for tds in cells if len(tds) > 1]


#: Before a screenshot: the panel's timings blanked (they differ on every
#: run; docs/example-site.md says so), so that a run that changed nothing
#: else writes the same images and a test run leaves docs/ as it was.
_STEADY = r"""
for (const row of document.querySelectorAll('#fragment-panel tbody tr')) {
  const cells = row.querySelectorAll('td');
  if (cells.length > 4) { cells[3].textContent = '–'; cells[4].textContent = '–'; }
}
for (const p of document.querySelectorAll('#fragment-panel p')) {
  p.innerHTML = p.innerHTML.replace(/[0-9.]+ ms in all/, '– ms in all');
}
"""


def screenshot(browser: Any, name: str) -> None:
    browser.execute_script(_STEADY)
    browser.save_screenshot(str(SCREENSHOTS / name))


def test_the_showcase_in_a_real_browser(site: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    log_in(browser, site, "alice")
    assert browser.current_url == site + "/"  # the index, not a 404
    assert browser.find_element(By.TAG_NAME, "h1").text == (
        "jinja-fragcache example site"
    )
    # The stylesheet was served and applies.
    body = browser.find_element(By.TAG_NAME, "body")
    assert body.value_of_css_property("background-color") == "rgba(246, 247, 249, 1)"
    nav = browser.find_elements(By.CSS_SELECTOR, "header.site nav.site a")
    assert [a.text for a in nav][:3] == ["Home", "Dashboard", "Reports"]
    screenshot(browser, "example-site-index.png")

    browser.get(site + "/templates/sidebar/")
    assert ("sidebar", "MISS") in panel(browser)
    browser.refresh()  # the second load is a hit
    assert panel(browser) == [("site_nav", "HIT"), ("sidebar", "HIT")]
    assert browser.find_elements(By.CSS_SELECTOR, "nav.sidebar a")
    screenshot(browser, "example-site-sidebar-hit.png")

    browser.get(site + "/nested/")
    first = browser.find_element(By.CSS_SELECTOR, "ul.nested li b").text
    browser.find_element(By.CSS_SELECTOR, 'button[name="change"]').click()
    # The click posts the form: the redirect may not have landed yet.
    changed = site + "/nested/#fragment-panel"
    WebDriverWait(browser, 10).until(lambda b: b.current_url == changed)
    assert browser.current_url == changed
    assert browser.find_element(By.CSS_SELECTOR, "ul.nested li b").text == str(
        int(first) + 1
    )
    rows = panel(browser)
    assert rows.count(("price", "MISS")) == 1 and rows.count(("price", "HIT")) == 11
    assert ("price_list", "MISS") in rows
    screenshot(browser, "example-site-nested-changed.png")


def test_stats_page_draws_its_chart_in_a_real_browser(site: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    log_in(browser, site, "staff")
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
