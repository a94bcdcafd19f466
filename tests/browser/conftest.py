"""Fixtures for the console and browser-client tests.

`chrome` drives Debian's headless Chromium through Debian's chromedriver with
Selenium; Selenium Manager is never asked for anything (the driver's path is
given and SE_OFFLINE is set), so nothing is downloaded. Tests that need it
skip, saying why, when /usr/bin/chromium or /usr/bin/chromedriver is missing
(`scripts/install-browser` installs both); a missing `selenium` package is a
failure, since the test extra installs it. Gateways the browser talks to run
as child processes (`neurelay gateway` or `neurelay dev`), so a blocking
browser call never stalls them and a test can kill and restart one on the
same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from neurelay.config import GatewayConfig
from neurelay.embedded import free_port
from tests.conftest import RunningGateway

CHROMIUM = Path(os.environ.get("NEURELAY_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("NEURELAY_CHROMEDRIVER", "/usr/bin/chromedriver"))
REPOSITORY = Path(__file__).resolve().parents[2]
ARTIFACTS = REPOSITORY / "artifacts"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
)


# -- in-process gateways for the HTTP-level tests -------------------------------------------


@pytest.fixture
async def console_gateway(
    gateway_factory: Callable[..., Awaitable[RunningGateway]],
    make_config: Callable[..., GatewayConfig],
) -> Callable[..., Awaitable[RunningGateway]]:
    """Start in-process gateways: `await console_gateway(dev_token=None, **config sections)`."""

    async def start(dev_token: str | None = None, **sections: Any) -> RunningGateway:
        return await gateway_factory(make_config(**sections), dev_token=dev_token)

    return start


# -- gateway processes ------------------------------------------------------------------------


class DevProcess:
    """`neurelay dev` as a child process, with the URL and token it prints."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        self.http_url = f"http://127.0.0.1:{port}"
        self.token = ""

    def wait_ready(self, timeout: float) -> None:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            seen.append(line)
            text = "".join(seen)
            token = re.search(r"token \(user[^\n]*\n\s*(\S+)", text)
            if "gateway ready at" in text and token:
                self.token = token.group(1)
                return
        raise AssertionError(f"neurelay dev did not start: {''.join(seen)}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def neurelay_dev() -> Iterator[Callable[[], DevProcess]]:
    started: list[DevProcess] = []

    def start() -> DevProcess:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "neurelay.cli", "dev", "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        dev = DevProcess(process, port)
        started.append(dev)
        dev.wait_ready(60.0)
        return dev

    yield start
    for dev in started:
        dev.stop()


# -- a page from another origin ---------------------------------------------------------------


class ForeignSite:
    """A static page served on another port, reached as http://localhost:<port>/."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        pages = self.pages

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = pages.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.origin = f"http://localhost:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def foreign_site() -> Iterator[ForeignSite]:
    site = ForeignSite()
    yield site
    site.close()


# -- the browser ------------------------------------------------------------------------------


def _browser_missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is not installed (run scripts/install-browser)"
    if not CHROMEDRIVER.exists():
        return f"{CHROMEDRIVER} is not installed (run scripts/install-browser)"
    return None


class Browser:
    """A Selenium session with waits that yield to the event loop and are always bounded."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    def open(self, url: str) -> None:
        self.driver.get(url)

    def find(self, css: str) -> Any:
        return self.driver.find_element("css selector", css)

    def find_all(self, css: str) -> list[Any]:
        return list(self.driver.find_elements("css selector", css))

    def text(self, css: str) -> str:
        found = self.find_all(css)
        return str(found[0].text) if found else ""

    def type(self, css: str, text: str) -> None:
        element = self.find(css)
        element.clear()
        element.send_keys(text)

    def click(self, css: str) -> None:
        self.find(css).click()

    def script(self, source: str, *args: Any) -> Any:
        return self.driver.execute_script(source, *args)

    async def until(self, condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(Exception):
                value = condition()
                if value:
                    return value
            if time.monotonic() > deadline:
                self.screenshot("failure")
                pytest.fail(f"timed out after {timeout} s waiting for {what}\n{self.console_log()}")
            await asyncio.sleep(0.1)

    def console_log(self) -> str:
        with contextlib.suppress(Exception):
            entries = self.driver.get_log("browser")
            return "\n".join(f"{e['level']}: {e['message']}" for e in entries)
        return ""

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path


@pytest.fixture
def chrome(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    missing = _browser_missing()
    if missing is not None:
        pytest.skip(f"browser tests need Chromium: {missing}")
    try:
        from selenium import webdriver
    except ImportError:
        pytest.fail("the selenium package is missing: pip install -e '.[test]'")
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tmp_path / "chromium-profile"
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(
        executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log")
    )
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield Browser(driver)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
