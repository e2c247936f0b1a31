"""The web UI of `videococa serve` in headless Chromium: each test does what a user does (type, click, press keys,
choose a file) and checks what the page then shows. The upload test changes the library, so it runs last."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

try:
    from selenium.webdriver.common.keys import Keys
except ImportError:  # the `driver` fixture skips (or fails on CI) with the reason
    Keys = None

ROOT = Path(__file__).resolve().parents[2]
KEY = "browser-test-key-0123456789"
WAIT = 20.0
TIME_RANGE = re.compile(r"^\d+:\d\d\u2013\d+:\d\d$")


def url_params(page) -> dict:
    return page.js("return Object.fromEntries(new URLSearchParams(location.search))")


def job(page) -> dict:
    """The job panel in one read: {id, state, status} (the page may change between two separate reads)."""
    return page.js("""const box = document.querySelector('[data-testid=job]');
        return {id: box.dataset.job || null, state: box.dataset.state || null,
                status: document.querySelector('[data-testid=job-status]').textContent.trim()}""")


def test_search_lives_in_the_url(page):
    page.open("/")
    assert page.find("search-status").text.startswith("Describe what you are looking for")
    cards = page.search("a red circle")
    first = cards[0]
    assert page.text_in(first, "result-path") == "red_circle.mp4"
    assert TIME_RANGE.match(page.text_in(first, "result-time")), page.text_in(first, "result-time")
    assert re.fullmatch(r"score -?\d\.\d{3}", page.text_in(first, "result-score"))
    assert url_params(page) == {"q": "a red circle", "group": "moment"}
    assert "q=a+red+circle" in page.driver.current_url
    moments = page.paths()
    assert len(moments) == 24 and len(moments) > len(set(moments))  # a page of moments, several per video
    assert page.text("search-status") == "24 moments for \u201ca red circle\u201d (more below)"
    page.find("load-more").click()
    page.wait(lambda: len(page.cards()) == 30, "Load more did not add the next page")
    assert page.text("search-status") == "30 moments for \u201ca red circle\u201d"
    assert not page.find("load-more").is_displayed() and page.paths()[:24] == moments

    page.driver.refresh()
    page.wait_results("the reload showed no results")
    assert page.paths() == moments and page.find("search-input").get_attribute("value") == "a red circle"

    page.find("group-video").click()  # group by video: one card per file, the URL says so
    page.wait(lambda: url_params(page).get("group") == "video", "the group toggle did not reach the URL")
    page.wait_results()
    videos = page.paths()
    assert videos[0] == "red_circle.mp4" and len(videos) == len(set(videos)) == 6

    page.driver.back()  # back: moments again, the toggle follows
    page.wait(lambda: url_params(page).get("group") == "moment", "back did not restore group=moment")
    page.wait(lambda: page.paths() == moments, "back did not restore the moment results")
    assert page.find("group-moment").is_selected() and not page.find("group-video").is_selected()
    page.driver.forward()
    page.wait(lambda: page.paths() == videos, "forward did not restore the video results")


def test_player_seeks_to_the_moment_and_pauses_at_its_end(page, long_video):
    page.open("/?q=a+blue+square&group=moment")
    cards = page.wait_results()
    inside = [c for c in cards if page.text_in(c, "result-path") == long_video
              and 1 <= float(c.get_attribute("data-start")) and float(c.get_attribute("data-end")) <= 19]
    assert inside, f"no moment of {long_video} inside it (from 1 s to 19 s) among {page.paths()}"
    card = inside[0]
    start, end = float(card.get_attribute("data-start")), float(card.get_attribute("data-end"))
    page.find("result-open", card).send_keys(Keys.ENTER)  # a card opens from the keyboard
    page.wait(lambda: page.js("return document.querySelector('dialog[data-testid=player]').open"),
              "Enter on a result card did not open the player")
    assert page.text("player-title") == long_video
    assert page.text("player-range") == "moment " + page.text_in(card, "result-time")
    page.wait(lambda: page.js("return document.querySelector('video').currentTime") >= start,
              f"the video never reached the moment's start ({start} s)")
    page.wait(lambda: page.js("const v = document.querySelector('video'); return v.paused && v.currentTime >= "
                              "arguments[0] - 0.05", end), f"playback did not pause at the moment's end ({end} s)")
    state = page.js("""const v = document.querySelector('video'); const p = v.played;
        return {t: v.currentTime, duration: v.duration, ended: v.ended, src: v.currentSrc,
                played: Array.from({length: p.length}, (_, i) => [p.start(i), p.end(i)])}""")
    assert state["src"].endswith("/stream") and not state["ended"] and state["duration"] == pytest.approx(20, abs=0.2)
    assert end - 0.05 <= state["t"] <= end + 0.5, state  # paused at the end, not at the end of the file
    assert state["played"] and state["played"][0][0] >= start - 0.05, state  # it played from the start, not from 0

    page.find("player-video").send_keys(Keys.ESCAPE)
    page.wait(lambda: not page.js("return document.querySelector('dialog[data-testid=player]').open"),
              "Escape did not close the player")
    assert page.js("return document.querySelector('video').getAttribute('src')") is None
    assert page.js("return document.activeElement.dataset.testid") == "result-open"  # focus back on the card


def test_a_video_the_browser_cannot_play_shows_its_preview(page, old_video):
    page.open("/?q=a+moving+square&group=moment")
    page.wait_results()
    page.find("load-more").click()  # all 30 moments, wherever its moments rank
    page.wait(lambda: len(page.cards()) == 30, "Load more did not add the next page")
    card = next((c for c in page.cards() if page.text_in(c, "result-path") == old_video
                 and float(c.get_attribute("data-start")) >= 1), None)
    assert card, f"no later moment of {old_video} among {page.paths()}"
    start, end = float(card.get_attribute("data-start")), float(card.get_attribute("data-end"))
    page.find("result-open", card).click()
    page.wait(lambda: page.js("const v = document.querySelector('video'); return v.paused && v.currentTime > 0"),
              "the preview did not play")
    state = page.js("""const v = document.querySelector('video');
        return {t: v.currentTime, duration: v.duration, src: v.currentSrc, source: v.dataset.source}""")
    query = page.js("return Object.fromEntries(new URL(arguments[0]).searchParams)", state["src"])
    assert state["source"] == "preview" and "/preview.webm?" in state["src"], state
    assert (float(query["start"]), float(query["end"])) == (start, end), state
    assert state["duration"] == pytest.approx(end - start, abs=0.15) and state["t"] >= end - start - 0.15, state
    page.find("player-close").click()


def test_more_like_this(page):
    page.open("/?q=a+green+triangle")
    first = page.wait_results()[0]
    source = first.get_attribute("data-entry-id")
    assert page.text_in(first, "result-path") == "green_triangle.mp4"
    page.find("more-like-this", first).click()
    page.wait(lambda: url_params(page).get("like") == source, "the URL did not take like=ENTRY_ID")
    cards = page.wait_results()
    assert source not in [c.get_attribute("data-entry-id") for c in cards]
    assert page.text_in(cards[0], "result-path") == "green_triangle.mp4"  # its neighbouring second is most alike
    assert page.text("like-source").startswith("More like green_triangle.mp4")
    assert page.find("search-input").get_attribute("value") == ""

    page.open("/?like=999999")  # an error is shown as the API words it
    page.wait(lambda: page.find("search-error").is_displayed(), "no error shown for an unknown entry")
    assert page.text("search-error") == "no entry 999999 in this library" and not page.cards()
    page.allowed_errors.append("status of 404")


def test_caption_and_ask_about_a_moment(page):
    page.open("/?q=a+red+circle&group=video")
    page.find("result-open", page.wait_results()[0]).click()
    page.wait(lambda: page.find("player").is_displayed(), "the player did not open")
    page.find("caption-button").click()
    page.find("ask-input").send_keys("what colour is the circle?", Keys.ENTER)
    page.wait(lambda: page.text("answer-text") not in ("", "Working\u2026"), "no answer appeared")
    assert page.text("answer-text") == "red"
    page.wait(lambda: page.text("caption-text") not in ("", "Working\u2026"), "no caption appeared")
    caption = page.find("caption-text")
    assert "error" not in caption.get_attribute("class") and len(caption.text.strip()) > 3, caption.text
    page.find("player-close").click()
    page.wait(lambda: not page.find("player").is_displayed(), "the close button did not close the player")


def test_library_page_shows_the_index(page):
    page.open("/#library")
    page.wait(lambda: page.find_all("stat-videos") and page.text("stat-videos") == "6", "no index status shown")
    assert page.text("stat-model").startswith("videococa-tiny") and page.text("stat-moments") == "30"
    page.wait(lambda: len(page.find_all("video-row")) == 6, "the video list did not show the 6 videos")
    assert page.find("drop-zone").is_displayed() and page.find("rescan").is_enabled()
    assert not page.find("read-only-note").is_displayed()
    assert "6 videos" in page.text("summary")
    page.find("nav-search").click()
    page.wait(lambda: page.find("search-view").is_displayed() and not page.find("library-view").is_displayed(),
              "the Search link did not show the search page")


def test_library_page_follows_a_job_started_elsewhere(page, server):
    import threading

    release = threading.Event()

    def work(job, update):  # a rescan as another client (or the server's start) would run it, held half-way
        update(done=1, total=3, current="somewhere/clip.mp4")
        release.wait(WAIT)
        update(done=3)
        return {"added": 0, "unchanged": 3}

    running = server.app.state.library.jobs.submit("update", work)
    try:
        page.open("/#library")
        page.wait(lambda: job(page)["id"] == running.id and job(page)["state"] == "running",
                  "the library page did not show the running job")
        assert job(page)["status"] == "Rescanning the library\u2026 1 of 3 \u2014 somewhere/clip.mp4"
        assert page.js("return document.querySelector('[data-testid=job-progress]').value") == pytest.approx(1 / 3)
    finally:
        release.set()
    page.wait(lambda: job(page)["state"] == "done", "the page did not see the job end")
    assert job(page)["status"] == "Rescanning the library: done (0 added, 3 unchanged)."
    assert page.js("return document.querySelector('[data-testid=job-progress]').value") == 1


def test_read_only_server_hides_mutations(page, serve_app):
    with serve_app(read_only=True) as ro:
        page.base = ro.url
        page.open("/#library")
        page.wait(lambda: page.find("read-only-note").is_displayed(), "no read-only note shown")
        assert not page.find("drop-zone").is_displayed() and not page.find("rescan").is_displayed()
        assert "read-only" in page.text("summary")
        page.driver.get("about:blank")  # nothing left loading from a server about to stop


def test_key_form_when_the_server_needs_a_key(page, serve_app):
    with serve_app(api_key=KEY) as keyed:
        page.base = keyed.url
        page.allowed_errors.append("status of 401")
        page.open("/?q=a+red+circle")
        page.wait(lambda: page.find("login").is_displayed(), "no key form appeared on 401")
        assert not page.cards()
        page.find("login-key").send_keys("not-the-key", Keys.ENTER)
        page.wait(lambda: page.find("login-error").is_displayed(), "a wrong key was not reported")
        assert page.text("login-error") == "wrong API key" and page.find("login").is_displayed()
        page.find("login-key").send_keys(KEY, Keys.ENTER)
        cards = page.wait_results("the search did not run after logging in")
        assert not page.find("login").is_displayed() and page.text_in(cards[0], "result-path") == "red_circle.mp4"
        page.wait(lambda: page.js("const i = document.querySelector('[data-testid=result-card] img'); "
                                  "return i.complete && i.naturalWidth > 0"), "thumbnails did not load with the cookie")
        assert "6 videos" in page.text("summary")  # the stats call waited for the same login
        page.driver.get("about:blank")


def test_screenshot_of_results(page, tmp_path):
    page.open("/?q=a+red+circle")
    cards = page.wait_results()
    assert page.text_in(cards[0], "result-path") == "red_circle.mp4" and cards[0].is_displayed()
    page.js("document.activeElement.blur()")
    page.wait(lambda: page.js("""return [...document.querySelectorAll('[data-testid=result-card] img')]
        .filter(i => i.getBoundingClientRect().top < innerHeight).every(i => i.complete && i.naturalWidth > 0)"""),
              "the visible thumbnails did not load")
    out = ROOT / "docs" / "serve.png" if os.environ.get("VIDEOCOCA_SCREENSHOT") == "1" else tmp_path / "serve.png"
    out.parent.mkdir(exist_ok=True)
    assert page.driver.save_screenshot(str(out))
    from PIL import Image

    with Image.open(out) as img:
        assert img.width == 1280, img.size
    assert out.stat().st_size < 300_000, f"{out} is {out.stat().st_size} bytes"


def test_upload_is_indexed_and_found(page, easy_videos, tmp_path, ui_library):
    star = next(p for p in easy_videos if "yellow_star" in p)
    name = "my star clip.mp4"
    shutil.copy(star, tmp_path / name)
    page.open("/#library")
    page.wait(lambda: page.find_all("stat-videos") and page.text("stat-videos") == "6", "no index status shown")
    page.find("upload-input").send_keys(str(tmp_path / name))
    page.wait(lambda: job(page)["state"] in ("done", "failed"), "the upload's job did not finish", timeout=60)
    assert job(page)["state"] == "done", page.explain()
    upload_job = job(page)["id"]
    assert page.js("return document.querySelector('[data-testid=job-progress]').value") == 1
    assert f"Stored as uploads/{name}." in page.text("job-status") and "1 added" in page.text("job-status")
    page.wait(lambda: page.text("stat-videos") == "7", "the index status did not count the upload")
    page.wait(lambda: len(page.find_all("video-row")) == 7, "the video list did not show the upload")
    assert (ui_library / "uploads" / name).is_file()

    page.find("rescan").click()  # a rescan finds nothing new
    page.wait(lambda: job(page)["id"] != upload_job and job(page)["state"] == "done", "the rescan did not finish")
    status = job(page)["status"]
    assert status.startswith("Rescanning") and "0 added" in status and "7 unchanged" in status, status

    page.find("nav-search").click()
    cards = page.search("a yellow star")
    assert page.text_in(cards[0], "result-path") == f"uploads/{name}"
