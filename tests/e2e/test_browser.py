"""
What a new user sees, in a real headless Chromium driven by Selenium against `airflow standalone`: log in, add
an `mka1` connection through the form, Test it (success, wrong key, unreachable host), trigger the example
pipeline, watch its batch task defer, read its XComs. Screenshots go to `.scratch/browser/` for a person.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import API_KEY
from tests.e2e.conftest import REPO
from tests.e2e.standalone import DAG_ID, PASSWORD, USERNAME, Standalone, free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
_missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.standalone,
    pytest.mark.skipif(
        bool(_missing),
        reason=f"no browser ({', '.join(_missing)} missing): as root, "
        "`apt-get update && apt-get install -y chromium chromium-driver`",
    ),
]

SHOTS = REPO / ".scratch" / "browser"


class Page:
    """The browser, with the few moves the tests make, and a numbered screenshot after each step."""

    def __init__(self, driver: Any, root: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver = driver
        self.root = root
        self.by = By
        self.shots = 0

    def open(self, path: str) -> None:
        self.driver.get(self.root + path)

    def shot(self, name: str) -> None:
        self.shots += 1
        self.driver.save_screenshot(str(SHOTS / f"{self.shots:02d}-{name}.png"))

    def one(self, css: str) -> Any:
        return self.driver.find_element(self.by.CSS_SELECTOR, css)

    def field(self, name: str) -> Any:
        return self.driver.find_element(self.by.NAME, name)

    def button(self, text: str, within: str = "body") -> Any:
        return self.wait(
            f"a button {text!r}",
            lambda: next((b for b in self.all(f"{within} button") if b.text.strip() == text), None),
        )

    def all(self, css: str) -> list[Any]:
        return list(self.driver.find_elements(self.by.CSS_SELECTOR, css))

    def text(self) -> str:
        return str(self.one("body").text)

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 20, every: float = 0.2) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if result := check():
                return result
            time.sleep(every)
        self.shot("timed-out")
        raise AssertionError(f"timed out waiting for {what}; the page says:\n{self.text()[-3000:]}")


@pytest.fixture(scope="module")
def page(standalone: Standalone) -> Iterator[Page]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    profile = tempfile.mkdtemp(prefix="mka1-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    # The driver's path given explicitly: Selenium Manager (which would download one) never runs.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield Page(driver, standalone.root)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _log_in(page: Page) -> None:
    page.open("/")
    page.wait("the login form", lambda: page.all("input[name=username]"))
    page.shot("login")
    page.field("username").send_keys(USERNAME)
    page.field("password").send_keys(PASSWORD)
    page.button("Sign in").click()
    page.wait("the home page", lambda: "/auth/login" not in page.driver.current_url and "Dags" in page.text())


def _add_connection(page: Page, conn_id: str, host: str, port: int, key: str) -> None:
    from selenium.webdriver.common.keys import Keys

    page.open("/connections")
    page.button("Add Connection").click()
    page.wait("the connection form", lambda: page.all("input[name=connection_id]"))
    page.field("connection_id").send_keys(conn_id)
    kind = page.one("input[role=combobox]")
    kind.send_keys("MKA1")
    page.wait("MKA1 in the connection types", lambda: "MKA1" in page.text())
    kind.send_keys(Keys.ENTER)
    page.wait("the MKA1 fields", lambda: page.all("input[name=host]"))
    form = page.text()
    for label in ("Base URL", "API key", "Port"):
        assert label in form, label
    page.field("host").send_keys(host)
    page.field("password").send_keys(key)
    page.field("port").send_keys(str(port))
    extras = page.button("Extra Fields")
    if extras.get_attribute("aria-expanded") != "true":  # the form remembers it from the last time
        extras.click()
    page.wait("the extra fields' help", lambda: "Path of a PEM file" in page.text())
    for help_text in ("Sent as X-On-Behalf-Of", "How long one request may wait", "Turn off only for"):
        assert help_text in page.text(), help_text
    page.shot(f"form-{conn_id}")
    page.button("Save").click()
    page.wait(f"{conn_id} in the list", lambda: any(conn_id in row.text for row in page.all("tbody tr")))


def _test_connection(page: Page, conn_id: str) -> tuple[str, str]:
    """Click the row's Test button; the toast's (type, text)."""
    page.open("/connections")
    row = page.wait(conn_id, lambda: next((r for r in page.all("tbody tr") if conn_id in r.text), None))
    toasts = "[data-scope=toast][data-part=root]"
    earlier = {t.get_attribute("id") for t in page.all(toasts)}
    row.find_element(page.by.CSS_SELECTOR, "button[aria-label='Test Connection']").click()
    toast = page.wait(
        "the Test result",
        lambda: next((t for t in page.all(toasts) if t.get_attribute("id") not in earlier and t.text), None),
    )
    kind, text = toast.get_attribute("data-type"), toast.text
    page.shot(f"test-{conn_id}")
    return kind, text


def test_connection_form_and_test_button(page: Page, standalone: Standalone) -> None:
    emulator = standalone.emulator.base_url
    port = int(emulator.rsplit(":", 1)[1])
    closed = free_port()  # nothing listens there
    _log_in(page)
    _add_connection(page, "mka1_browser", emulator, port, API_KEY)
    _add_connection(page, "mka1_wrong_key", emulator, port, "not-the-key")
    _add_connection(page, "mka1_unreachable", f"http://127.0.0.1:{closed}", closed, API_KEY)

    kind, text = _test_connection(page, "mka1_browser")
    assert kind == "success", text
    assert f"Connected to the MKA1 API at {emulator}/api/v1/llm." in text

    kind, text = _test_connection(page, "mka1_wrong_key")
    assert kind == "error", text
    assert "answered 401 Unauthorized: Invalid API key" in text, text
    assert "not-the-key" not in text

    kind, text = _test_connection(page, "mka1_unreachable")
    assert kind == "error", text
    assert f"could not connect to 127.0.0.1:{closed}: connection refused" in text, text
    assert "HTTPConnectionPool" not in text


def test_pipeline_defers_and_hands_over_the_output_file(page: Page, standalone: Standalone, tmp_path) -> None:
    from selenium.webdriver.common.keys import Keys

    run_id = f"browser_{int(time.time())}"
    page.open(f"/dags/{DAG_ID}")
    page.button("Trigger").click()
    workdir = page.wait("the run parameters", lambda: page.all("input[name=element_workdir]"))[0]
    workdir.send_keys(Keys.CONTROL, "a")
    workdir.send_keys(str(tmp_path / "pipeline"))
    page.button("Advanced Options", within="[role=dialog]").click()
    page.wait("the run id field", lambda: page.all("input[name=dagRunId]"))[0].send_keys(run_id)
    page.shot("trigger")
    page.button("Trigger", within="[role=dialog]").click()
    page.wait("the dialog to close", lambda: not page.all("[role=dialog] input[name=dagRunId]"))

    task = f"/dags/{DAG_ID}/runs/{run_id}/tasks/batch"
    page.open(task)
    page.wait("the batch task to defer", lambda: "Deferred" in page.text(), timeout=120, every=0.5)
    page.shot("deferred")
    page.wait("the batch task to succeed", lambda: "Success" in page.text(), timeout=180, every=1)
    page.shot("batch-log")

    page.open(f"{task}/xcom")
    rows = page.wait("the XComs", lambda: _xcom_rows(page) if "return_value" in page.text() else None)
    page.shot("xcom")
    batch_id, output = rows["batch_id"], rows["return_value"]
    batch = requests.get(
        f"{standalone.emulator.base_url}/api/v1/llm/batches/{batch_id}",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=10,
    ).json()
    assert batch["status"] == "completed"
    assert output == batch["output_file_id"] and output.startswith("file-")


def _xcom_rows(page: Page) -> dict[str, str]:
    """key -> value as the XCom table shows them (a row reads "key timestamp\\nvalue\\nCopy")."""
    rows = {}
    for row in page.all("tbody tr"):
        head, _, rest = row.text.partition("\n")
        rows[head.split(" ")[0]] = rest.removesuffix("Copy").strip()
    return rows
