"""A real headless browser (Debian's chromium + chromedriver, via selenium) against a live server.

Skipped when chromium, chromedriver or selenium is missing (``make prereqs``
installs the first two as root, the dev group the third), except under
``PGFLOW_REQUIRE_BROWSER`` or ``CI``: then the test fails.  With
``PGFLOW_SCREENSHOTS=DIR`` the test saves screenshots of the main pages
there (``make screenshots``: docs/img/).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import uvicorn

from pgflow.ui import app

from .conftest import TOKEN, Start, Work

pytestmark = pytest.mark.db
Conn = psycopg.Connection[tuple[Any, ...]]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def _missing(reason: str) -> None:
    if os.environ.get("PGFLOW_REQUIRE_BROWSER") or os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from selenium import webdriver  # noqa: PLC0415
        from selenium.webdriver.chrome.service import Service  # noqa: PLC0415
    except ImportError:
        _missing("selenium is not installed (pip install --group dev)")
    if CHROMIUM is None or DRIVER is None:
        _missing("chromium / chromedriver missing: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    options.add_argument("--disable-dev-shm-usage")
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def server(client_dsn: str) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(app(client_dsn, token=TOKEN), host="127.0.0.1", port=port)
    config.log_level = "warning"
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=20)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def shot(driver: Any, name: str) -> None:
    where = os.environ.get("PGFLOW_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(where) / f"{name}.png"))


def test_a_run_turns_completed_on_its_page_without_a_reload(
    browser: Any, server: str, conn: Conn, pipe: str, start: Start, work: Work
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    def step_status(slug: str) -> str:  # read in one script: the live part is replaced
        return str(
            browser.execute_script(
                "var r = document.querySelector('tr[data-step=\"' + arguments[0] + '\"]');"
                " return r ? r.getAttribute('data-status') : '';",
                slug,
            )
        )

    def text_of(element_id: str) -> str:
        return str(
            browser.execute_script(
                "var e = document.getElementById(arguments[0]); return e ? e.textContent : '';",
                element_id,
            )
        )

    failed = start(payload='{"n": 0}')
    work(error="upstream answered 503")  # the oldest task: failed's fetch
    run_id = start(payload='{"n": 7}')
    conn.execute("SELECT pgflow.register_worker(%s, ARRAY['pipe'], 'box-1', 4242)", (uuid.uuid4(),))

    browser.get(f"{server}/")
    assert "/login" in browser.current_url  # the token is needed
    browser.find_element(By.NAME, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "form button").click()
    wait_for(lambda: "<h1>Flows</h1>" in browser.page_source, "the flows page")
    wait_for(lambda: bool(browser.find_elements(By.CSS_SELECTOR, "pre.mermaid svg")), "the DAG")
    shot(browser, "flows")

    browser.get(f"{server}/runs/{run_id}")
    wait_for(lambda: text_of("live-state") == "live", "live state")
    browser.execute_script("window.__same_page = true;")

    assert step_status("fetch") == "started"
    time.sleep(0.5)  # the EventSource is open before the worker reports
    work(output='{"rows": 7}')
    wait_for(lambda: step_status("fetch") == "completed", "fetch completed")
    work(output='{"stored": true}')
    wait_for(lambda: step_status("store") == "completed", "store completed")
    wait_for(lambda: text_of("run-status") == "completed", "run done")
    assert browser.execute_script("return window.__same_page === true;"), "the page reloaded"
    shot(browser, "run")

    browser.get(f"{server}/runs/{failed}")
    wait_for(lambda: "upstream answered 503" in text_of("run-error"), "the error")
    browser.find_element(By.ID, "retry").click()  # a grant_dashboard role may not retry
    # The click submits a form: the refusal arrives with the next page, not at once.
    wait_for(lambda: "retry_run is an operator function" in browser.page_source, "the refusal")

    other = start()
    browser.get(f"{server}/runs/{other}")
    browser.find_element(By.ID, "cancel").click()
    wait_for(lambda: text_of("run-status") == "cancelled", "cancelled")

    browser.get(f"{server}/runs")
    shot(browser, "runs")
    browser.get(f"{server}/workers")
    assert "box-1" in browser.page_source
    shot(browser, "workers")
    browser.get(f"{server}/queues")
    shot(browser, "queues")

    browser.delete_all_cookies()  # without the session: refused
    browser.get(f"{server}/runs/{run_id}")
    assert "/login" in browser.current_url
