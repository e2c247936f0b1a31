"""The web UI in a real browser: the app under uvicorn on a free loopback port (a background thread), driven by
Debian's Chromium through Selenium and its chromedriver. Nothing is downloaded: the browser and the driver are
given by path, so Selenium Manager never runs. Without them the tests are skipped (failed when CI=true).

The served library: four of the easy videos (2 s each; the yellow star is left out for the upload test), a
20 s blue square under long/ and a 2 s MPEG-4 AVI under old/, indexed with 1 s segments: 30 moments (more than a
page of results), moments that start and end inside a video, and one video only a preview can show.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("VIDEOCOCA_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("VIDEOCOCA_CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT = 20.0
"""Seconds an explicit wait polls before it fails (model calls on two busy cores included)."""
LONG_VIDEO = "long/blue_square_20s.mp4"
OLD_VIDEO = "old/pattern.avi"
"""MPEG-4 Part 2 in AVI: a browser cannot play it, so the server reports it not playable (the UI plays a preview)."""


def unavailable(reason: str):
    """Skip the test for a missing browser, except on CI (CI=true), where it must not pass silently."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


# ---------------------------------------------------------------------- the library and its server
@pytest.fixture(scope="session")
def ui_library(tmp_path_factory, easy_videos) -> Path:
    from videococa.synthetic.benchmark import write_mp4
    from videococa.synthetic.world import Obj, VideoSpec
    from videococa.testing import write_video

    lib = tmp_path_factory.mktemp("ui") / "library"
    (lib / "long").mkdir(parents=True)
    for p in easy_videos:
        if "yellow_star" not in p:
            shutil.copy(p, lib / Path(p).name)
    spec = VideoSpec(1, Obj("square", "blue", "large", 0.5, 0.5), "down", "plain", (128, 128, 128))
    write_mp4(lib / LONG_VIDEO, spec.render_frames(160, 96))  # 20 s at 8 fps: 20 moments, so results page
    (lib / OLD_VIDEO).parent.mkdir()
    write_video(lib / OLD_VIDEO, codec="mpeg4", num_frames=40, fps=20)  # 2 s
    return lib


@pytest.fixture(scope="session")
def long_video() -> str:
    """The library path of the 20 s video."""
    return LONG_VIDEO


@pytest.fixture(scope="session")
def old_video() -> str:
    """The library path of the video a browser cannot play."""
    return OLD_VIDEO


@pytest.fixture(scope="session")
def ui_index(ui_library, tiny_model) -> Path:
    from videococa import VideoIndex

    path = ui_library.parent / "index"
    with VideoIndex(path, tiny_model, segment=1.0) as index:
        index.add([ui_library])
    return path


class LiveServer:
    """uvicorn serving one app on 127.0.0.1 and a free port, in a thread of this process."""

    def __init__(self, app):
        import uvicorn

        from videococa.serve.server import bind

        self.app = app
        self.sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="uvicorn-ui-test")

    def __enter__(self) -> LiveServer:
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() - t0 > WAIT:
                raise RuntimeError(f"uvicorn did not start serving {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
        assert not self.thread.is_alive(), "uvicorn did not stop within 10 s"


@pytest.fixture(scope="session")
def serve_app(ui_library, ui_index, tiny_model, tmp_path_factory):
    """A context manager: `with serve_app(**settings) as server:` serves the UI library (server.url)."""
    from videococa import VideoIndex
    from videococa.serve import ServeSettings, create_app

    cache = tmp_path_factory.mktemp("ui-cache")

    @contextmanager
    def serve(**settings):
        index = VideoIndex(ui_index, tiny_model, create=False)
        cfg = ServeSettings(library=ui_library, index=ui_index, cache_dir=cache, **settings)
        with LiveServer(create_app(index, tiny_model, cfg, start_jobs=False)) as server:
            yield server
        index.close()

    return serve


@pytest.fixture(scope="session")
def server(serve_app):
    with serve_app() as s:
        yield s


# ---------------------------------------------------------------------- the browser
@pytest.fixture(scope="session")
def driver():
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        unavailable(f"selenium is not installed ({exc})")
    for what, path in (("Chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)):
        if not os.access(path, os.X_OK):
            unavailable(f"{what} not found at {path} (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800",
                "--autoplay-policy=no-user-gesture-required", "--mute-audio", "--disable-gpu",
                "--disable-extensions", "--no-first-run", "--hide-scrollbars", "--force-color-profile=srgb",
                "--force-device-scale-factor=1", "--lang=en-GB"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    except WebDriverException as exc:  # the browser is there but does not start: a real failure
        pytest.fail(f"Chromium {CHROMIUM} did not start under {CHROMEDRIVER}: {exc.msg}", pytrace=False)
    browser.set_window_size(1280, 800)
    yield browser
    browser.quit()


class Page:
    """The UI in the browser, found by data-testid; waits poll until a condition holds or fail saying which."""

    def __init__(self, driver, base: str):
        self.driver = driver
        self.base = base
        self.allowed_errors: list[str] = []
        self.log: list[dict] = []  # the browser console so far (reading it empties the browser's copy)

    # --------------------------------------------------------------- finding
    def open(self, path: str = "/") -> None:
        self.driver.get(self.base + path)
        self.wait(lambda: self.js("return document.documentElement.dataset.ready === 'true'"),
                  f"the page {path} did not start (app.js not run?)")

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def find(self, testid: str, root=None):
        from selenium.webdriver.common.by import By

        return (root or self.driver).find_element(By.CSS_SELECTOR, f"[data-testid={testid}]")

    def find_all(self, testid: str, root=None) -> list:
        from selenium.webdriver.common.by import By

        return (root or self.driver).find_elements(By.CSS_SELECTOR, f"[data-testid={testid}]")

    def text(self, testid: str) -> str:
        return self.find(testid).text.strip()

    def wait(self, condition, message: str, timeout: float = WAIT):
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(lambda d: condition(), message)
        except TimeoutException as exc:
            raise AssertionError(f"{exc.msg} (after {timeout:g} s; page says: {self.explain()})") from None

    def explain(self) -> str:
        """What the page shows, for a failure message: statuses, errors, the URL."""
        return self.js("""
            const parts = [location.href];
            for (const id of ['search-status', 'search-error', 'job-status', 'job-error', 'stats-error',
                              'player-error', 'login-error', 'caption-text', 'answer-text']) {
              const n = document.querySelector(`[data-testid=${id}]`);
              if (n && n.textContent.trim()) parts.push(`${id}: ${n.textContent.trim()}`);
            }
            return parts.join(' | ');""") + "".join(f" | console: {m}" for m in self.console_errors())

    # --------------------------------------------------------------- the search page
    def cards(self) -> list:
        return self.find_all("result-card")

    def paths(self) -> list[str]:
        return [self.text_in(c, "result-path") for c in self.cards()]

    def text_in(self, root, testid: str) -> str:
        return self.find(testid, root).text.strip()

    def wait_results(self, message: str = "no results were shown") -> list:
        self.wait(lambda: self.find("search-status").get_attribute("data-state") in ("results", "empty", "error"),
                  message)
        assert self.find("search-status").get_attribute("data-state") == "results", \
            f"{message}: {self.explain()}"
        return self.cards()

    def search(self, text: str) -> list:
        from selenium.webdriver.common.keys import Keys

        box = self.find("search-input")
        box.clear()
        box.send_keys(text, Keys.ENTER)
        self.wait(lambda: self.js("return new URLSearchParams(location.search).get('q')") == text,
                  f"the URL did not take the query {text!r}")
        return self.wait_results(f"searching {text!r} showed no results")

    def console_errors(self) -> list[str]:
        self.log += self.driver.get_log("browser")
        return [e["message"] for e in self.log if e["level"] == "SEVERE"
                and not any(a in e["message"] for a in self.allowed_errors)]


@pytest.fixture
def page(driver, server):
    """The browser on a fresh page of the shared server; the test fails on any console error (a CSP violation,
    a script error, a failed request) it did not expect."""
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})  # cookies are per host, shared by every port
    driver.get("about:blank")
    driver.get_log("browser")  # drop what earlier tests left
    p = Page(driver, server.url)
    yield p
    errors = p.console_errors()
    assert not errors, f"the browser console reported errors: {errors}"
