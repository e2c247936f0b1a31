"""`videococa serve` as a user runs it: the URL printed, the index built in the background, Ctrl-C stops it;
the demo library; and the settings it refuses."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def start(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "videococa", "serve", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("videococa serve: http://"):
        proc.kill()
        raise AssertionError(f"no URL printed: {line!r} {proc.stderr.read()}")
    return proc, line.split()[2]


def get(url: str, data: dict | None = None) -> dict:
    req = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def wait_for(fn, timeout: float = 120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        value = fn()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def stop(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return code, proc.stderr.read()


def test_serve_builds_the_index_in_the_background_and_stops_on_ctrl_c(tmp_path, easy_videos):
    lib = tmp_path / "lib"
    lib.mkdir()
    for p in easy_videos[:2]:
        shutil.copy(p, lib)
    proc, url = start("--library", str(lib))
    try:
        assert url.startswith("http://127.0.0.1:")
        assert get(url + "api/health")["status"] == "ok"
        stats = wait_for(lambda: (s := get(url + "api/stats"))["videos"] == 2 and s["job"] is None and s)
        assert stats["segment"] == 5.0 and stats["model"] == "videococa-tiny"
        hits = get(url + "api/search", {"text": "a blue square", "group_by": "video"})["hits"]
        assert hits[0]["path"] == "blue_square.mp4"
        with urllib.request.urlopen(url, timeout=30) as r:
            assert b"<html" in r.read().lower()
    finally:
        code, err = stop(proc)
    assert code == 0 and "Traceback" not in err
    assert (lib / ".videococa-index" / "index.sqlite").is_file()


def test_serve_demo_works_offline():
    proc, url = start("--demo")
    try:
        wait_for(lambda: (s := get(url + "api/stats"))["videos"] == 6 and s["job"] is None)
        hits = get(url + "api/search", {"text": "a green triangle", "group_by": "video", "top_k": 3})["hits"]
        assert hits[0]["path"] == "green_triangle_left.mp4"
    finally:
        stop(proc)


@pytest.mark.parametrize("args, words", [
    (["--library", ".", "--host", "0.0.0.0"], "--api-key"),
    (["--library", ".", "--api-key", "short"], "at least 16"),
    (["--index", "/nonexistent/idx", "--read-only"], "no video index"),
    ([], "--library DIR"),
    (["--demo", "--library", "."], "--demo"),
])
def test_serve_refuses_unsafe_or_impossible_settings(args, words, tmp_path):
    r = subprocess.run([sys.executable, "-m", "videococa", "serve", "--port", "0", *args], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
