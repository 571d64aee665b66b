"""The task page in a real browser: headless Chromium against a real server.

``apps/web_app.py`` (Starlette, the page mounted at ``/tasks``) runs under
uvicorn (asyncio) and hypercorn (trio) on 127.0.0.1; Debian's Chromium,
driven by Selenium through Debian's chromedriver (never a downloaded one),
loads the page, and the test asserts what a person sees as tasks start, fail,
finish and are cancelled from the page: hostile names and messages show as
literal text and run nothing. A screenshot is saved to
``tests/artifacts/web-page.png`` (the docs' picture comes from it).

Skipped, saying what to install, where no Chromium or chromedriver is found;
``./dev test`` installs both from Debian when it runs as root.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import APPS, EXIT_BOUND, ServeFactory, app_servers

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
# As in apps/web_app.py (not imported: importing it configures logging).
HOSTILE_NAME = "<img src=x onerror=\"window.pwned='name'\">"
HOSTILE_ERROR = (
    "</script><script>window.pwned='error'</script>\x1b[31mred\x1b[0m <b>bold</b>"
)

#: The app's drain deadline (EXAMPLE_SHUTDOWN_TIMEOUT, the serve() default).
SHUTDOWN_TIMEOUT = 1.0
#: Seconds the page may take to show a change (it polls every 0.2 s).
SHOWN_WITHIN = 10.0

_INSTALL = (
    "install Debian's chromium and chromium-driver (apt-get install chromium "
    "chromium-driver); `./dev test` does it when run as root"
)


def _browser_paths() -> tuple[str, str]:
    browser = next(
        (
            path
            for name in ("chromium", "chromium-browser", "google-chrome")
            if (path := shutil.which(name))
        ),
        None,
    )
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        missing = "Chromium" if browser is None else "chromedriver"
        pytest.skip(f"browser tests skipped: no {missing} found; {_INSTALL}")
    return browser, driver


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium through the system's chromedriver (no downloads)."""
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is in the tests dependency group"
    )
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI containers run as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1200,1500",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager is never asked to download.
    driver = webdriver.Chrome(
        service=Service(executable_path=driver_path), options=options
    )
    try:
        yield driver
    finally:
        driver.quit()


_uvicorn, _hypercorn_trio = app_servers("web_app:app")


def _until(driver: Any, what: str, condition: Callable[[Any], Any]) -> Any:
    """Wait (bounded) until the page shows ``what``; fail with what it shows."""
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(
        driver,
        SHOWN_WITHIN,
        poll_frequency=0.05,
        ignored_exceptions=(StaleElementReferenceException, NoSuchElementException),
    )
    try:
        return wait.until(condition)
    except Exception:
        body = driver.execute_script("return document.body.innerText")
        pytest.fail(f"the page did not show {what} within {SHOWN_WITHIN} s:\n{body}")


# Each read is one script run, so that a redraw between two WebDriver calls
# cannot leave a half-read table; innerText is the text a person sees.
_READ_ROWS = """
return Array.from(
  document.querySelectorAll(`#${arguments[0]} tbody tr[data-task-id]`),
  (row) => [row.dataset.taskId, Array.from(row.cells, (cell) => cell.innerText)],
);
"""
_READ_FAILURE = """
const box = document.querySelector(`.failure[data-task-id="${arguments[0]}"]`);
if (box === null) return null;
return [box.querySelector(".error").innerText, box.querySelector("pre").innerText];
"""


def _stat(driver: Any, name: str) -> str:
    script = "return document.querySelector(`#stat-${arguments[0]} dd`).innerText"
    return str(driver.execute_script(script, name))


def _rows(driver: Any, table: str) -> dict[str, list[str]]:
    """The rows of a table as a person reads them: task id -> cell texts."""
    return dict(driver.execute_script(_READ_ROWS, table))


def _failure(driver: Any, task_id: str) -> tuple[str, str] | None:
    """A failure's error line and traceback, as shown; None while absent."""
    found = driver.execute_script(_READ_FAILURE, task_id)
    return None if found is None else (found[0], found[1])


def _cancel_button(driver: Any, task_id: str) -> Any:
    return driver.find_element(
        "css selector", f'#running tr[data-task-id="{task_id}"] button'
    )


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(_uvicorn, id="uvicorn-asyncio"),
        pytest.param(_hypercorn_trio, id="hypercorn-trio"),
    ],
)
def test_a_person_watches_tasks_start_fail_finish_and_cancels_one(
    serve: ServeFactory, browser: Any, command: Callable[[int], list[str]]
) -> None:
    """The page follows tasks live, shows hostile text literally, and cancels."""
    server = serve(
        command, shutdown_timeout=SHUTDOWN_TIMEOUT, env={"PYTHONPATH": str(APPS)}
    )
    by = "css selector"
    browser.get(f"{server.url}/tasks")  # Starlette redirects to /tasks/
    status = "its first update"
    _until(browser, status, lambda d: "Updated" in d.find_element(by, "#status").text)
    assert browser.title == "Example app tasks"
    assert browser.find_element(by, "#running-empty").text == "No running tasks."
    _until(browser, "nothing running", lambda d: _stat(d, "running") == "0")

    def post(path: str) -> str:
        response = httpx.post(f"{server.url}{path}", timeout=5)
        response.raise_for_status()
        return str(response.json().get("task_id"))

    # A task starts: it appears as running, its hostile name as plain text.
    blocked = post("/spawn/block")
    row = _until(
        browser, "the running task", lambda d: _rows(d, "running").get(blocked)
    )
    assert row[:3] == [HOSTILE_NAME, blocked, "1"]
    _until(browser, "one running", lambda d: _stat(d, "running") == "1")
    assert not browser.find_element(by, "#running-empty").is_displayed()

    # A task fails: its error and traceback appear, markup and escapes literal.
    failed = post("/spawn/fail")
    error, traceback = _until(browser, "the failure", lambda d: _failure(d, failed))
    shown_error = HOSTILE_ERROR.replace("\x1b", "\\x1b")
    assert error == f"ValueError: {shown_error}"
    assert "in failing_job" in traceback
    assert traceback.endswith(f"ValueError: {shown_error}")
    _until(browser, "one failure counted", lambda d: _stat(d, "failed") == "1")

    # A service crashes once and is restarted: its restart count shows.
    service = post("/spawn/service")

    def restarted(d: Any) -> bool:
        cells = _rows(d, "services").get(service, [])
        return cells[:5] == ["crashy", service, "running", "permanent", "1"]

    _until(browser, "the restarted service", restarted)
    _until(browser, "two running", lambda d: _stat(d, "running") == "2")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "web-page.png"
    assert browser.save_screenshot(str(shot))
    print(f"screenshot of the task page: {shot}")

    # The blocked task finishes: it leaves the table, the running count drops
    # (the service runs on).
    post("/release")
    _until(
        browser, "one running task", lambda d: list(_rows(d, "running")) == [service]
    )
    _until(browser, "the drop", lambda d: _stat(d, "running") == "1")
    _until(browser, "one success", lambda d: _stat(d, "succeeded") == "1")

    # A person cancels a task from the page.
    doomed = post("/spawn/block")
    _until(browser, "the second task", lambda d: _rows(d, "running").get(doomed))
    button = _until(browser, "a cancel button", lambda d: _cancel_button(d, doomed))
    # Rows are kept from poll to poll: the button a person aims at is still
    # the one on the page several polls later (a rebuilt row would lose the
    # click, and makes this reference stale).
    shown = browser.find_element(by, "#status").text

    def later_polls(d: Any) -> bool:
        return bool(d.find_element(by, "#status").text != shown)

    _until(browser, "later polls", later_polls)
    button.click()
    _until(browser, "the cancelled count", lambda d: _stat(d, "cancelled") == "1")
    _until(browser, "it gone", lambda d: doomed not in _rows(d, "running"))
    state = httpx.get(f"{server.url}/tasks/api/tasks", timeout=5).json()
    assert state["stats"]["cancelled"] == 1

    # Nothing hostile ran or became markup; no task argument reached the page.
    assert browser.execute_script("return window.pwned === undefined") is True
    assert browser.find_elements(by, "main img, main b, main script") == []
    assert "hunter2" not in browser.page_source
    severe = [
        entry
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" and "favicon.ico" not in entry["message"]
    ]
    assert severe == []

    # An open page holds no connection: the server exits within its bound
    # (nothing else is left to drain; the service is cancelled), and the page
    # says that the server is away.
    seconds = server.terminate(timeout=SHUTDOWN_TIMEOUT + EXIT_BOUND + 10)
    print(f"server exited {seconds:.2f} s after SIGTERM with the page open")
    assert seconds < SHUTDOWN_TIMEOUT + EXIT_BOUND, server.output()
    offline = "the server gone"
    _until(browser, offline, lambda d: "Offline" in d.find_element(by, "#status").text)


@pytest.mark.parametrize("missing", ["chromium", "chromedriver"])
def test_without_a_browser_the_skip_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    """No Chromium or no chromedriver: a skip naming the Debian packages."""

    def which(name: str) -> str | None:
        is_driver = name == "chromedriver"
        gone = is_driver if missing == "chromedriver" else not is_driver
        return None if gone else f"/usr/bin/{name}"

    monkeypatch.setattr(shutil, "which", which)
    expected = "Chromium" if missing == "chromium" else "chromedriver"
    with pytest.raises(pytest.skip.Exception, match=rf"no {expected} found; install"):
        _browser_paths()
