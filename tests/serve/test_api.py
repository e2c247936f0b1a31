"""The HTTP API in-process (Starlette's TestClient): every endpoint, Range requests, pages, filters, jobs, and
hostile requests (traversal, unknown ids, a symlink out of the library, bad uploads, keys, read-only)."""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from videococa import VideoIndex
from videococa.errors import OptionError
from videococa.serve import ServeSettings, create_app
from videococa.serve.engine import Engine

KEY = "k" * 24


@pytest.fixture(scope="module")
def library(tmp_path_factory, easy_videos):
    root = tmp_path_factory.mktemp("served")
    lib = root / "library"
    (lib / "sub").mkdir(parents=True)
    for i, p in enumerate(easy_videos):
        shutil.copy(p, lib / ("sub" if i % 2 else "") / Path(p).name)
    outside = root / "outside"
    outside.mkdir()
    shutil.copy(easy_videos[0], outside / "secret.mp4")
    os.symlink(outside / "secret.mp4", lib / "escape.mp4")  # indexed (links are followed) but never served
    return lib


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, tiny_model, library):
    path = tmp_path_factory.mktemp("sidx") / "index"
    with VideoIndex(path, tiny_model, segment=1.0) as index:
        index.add([library])
    return path


def make_client(index_dir, model, library, **settings) -> TestClient:
    index = VideoIndex(index_dir, model, create=False)
    cfg = ServeSettings(library=library, index=index_dir, cache_dir=index_dir.parent / "cache", **settings)
    return TestClient(create_app(index, model, cfg, start_jobs=False))


@pytest.fixture(scope="module")
def client(index_dir, tiny_model, library):
    with make_client(index_dir, tiny_model, library) as c:
        yield c


def search(client, **body):
    r = client.post("/api/search", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def wait_job(client, job_id: str, timeout: float = 120) -> dict:
    t0 = time.time()
    while time.time() - t0 < timeout:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


# ---------------------------------------------------------------- status
def test_health_stats_and_openapi(client):
    assert client.get("/api/health").json()["status"] == "ok"
    st = client.get("/api/stats").json()
    assert st["videos"] == 6 and st["model"] == "videococa-tiny" and st["index_kind"] == "exact"
    assert st["entries"] > 6 and st["job"] is None and len(st["fingerprint"]) > 8
    assert st["frames"] == 8 and st["segment"] == 1.0  # numbers (the index stores its settings as text)
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/api/search", "/api/videos", "/api/videos/{video_id}/stream", "/api/jobs/{job_id}/events",
              "/api/classify", "/api/index/update"):
        assert p in paths


# ---------------------------------------------------------------- search
def test_text_search_finds_the_video_first(client):
    hits = search(client, text="a red circle", group_by="video", top_k=3)["hits"]
    assert hits[0]["path"] == "red_circle.mp4"
    h = hits[0]
    assert set(h) >= {"entry_id", "video_id", "path", "start", "end", "score", "thumbnail_url", "caption"}
    assert h["thumbnail_url"].startswith(f"/api/videos/{h['video_id']}/thumbnail?t=") and h["end"] > h["start"]
    assert all(not x["path"].startswith("/") for x in hits)


def test_group_by_and_pages(client):
    full = search(client, text="a blue square", top_k=40)["hits"]
    assert len({h["video_id"] for h in full}) < len(full)  # moments: several per video
    first = search(client, text="a blue square", top_k=4)
    second = search(client, text="a blue square", top_k=4, cursor=first["next_cursor"])
    assert [h["entry_id"] for h in first["hits"] + second["hits"]] == [h["entry_id"] for h in full[:8]]
    r = client.post("/api/search", json={"text": "a dog", "top_k": 4, "cursor": first["next_cursor"]})
    assert r.status_code == 400 and "another query" in r.json()["error"]
    videos = search(client, text="a blue square", top_k=40, group_by="video")["hits"]
    assert len(videos) == 5 and len({h["video_id"] for h in videos}) == 5  # 5 served; the symlink is not
    assert search(client, text="a blue square", top_k=40, group_by="video")["next_cursor"] is None


def test_filters_and_threshold(client):
    sub = search(client, text="a shape", top_k=50, filters={"path_prefix": "sub/"})["hits"]
    assert sub and all(h["path"].startswith("sub/") for h in sub)
    glob = search(client, text="a shape", top_k=50, filters={"path_glob": "*circle*"})["hits"]
    assert {h["path"] for h in glob} == {"red_circle.mp4"}
    assert search(client, text="a shape", filters={"min_duration": 500})["hits"] == []
    assert search(client, text="a shape", filters={"modified_before": 1})["hits"] == []
    some = search(client, text="a shape", top_k=50)["hits"]
    cut = some[3]["score"]
    assert all(h["score"] >= cut for h in search(client, text="a shape", top_k=50, min_score=cut)["hits"])
    for bad in ({"path_prefix": "../"}, {"path_prefix": "/etc"}, {"path_glob": "../*"}):
        r = client.post("/api/search", json={"text": "x", "filters": bad})
        assert r.status_code == 400 and "relative to the library root" in r.json()["error"]
    r = client.post("/api/search", json={"text": "x", "filters": {"min_duration": 5, "max_duration": 1}})
    assert r.status_code == 400 and "greater than" in r.json()["error"]


def test_more_like_this_and_bad_queries(client):
    top = search(client, text="a green triangle", top_k=1)["hits"][0]
    like = search(client, entry_id=top["entry_id"], top_k=5)["hits"]
    assert top["entry_id"] not in {h["entry_id"] for h in like}
    assert like[0]["video_id"] == top["video_id"]  # its neighbouring segments look most alike
    for body, status, words in (({"entry_id": 999999}, 404, "no entry"), ({}, 400, "give text"),
                                ({"text": "  "}, 422, "text is empty"), ({"text": "a", "top_k": 0}, 422, "top_k"),
                                ({"text": "a", "bogus": 1}, 422, "bogus"),
                                ({"text": "a", "group_by": "file"}, 422, "group_by")):
        r = client.post("/api/search", json=body)
        assert r.status_code == status and words in r.json()["error"], (body, r.text)
    r = client.post("/api/search", content=b"not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not JSON" in r.json()["error"]


def test_search_by_uploaded_image_and_clip(client, easy_videos):
    with av.open(easy_videos[1]) as c:  # blue square
        frame = next(c.decode(video=0)).to_image()
    buf = io.BytesIO()
    frame.save(buf, format="PNG")
    r = client.post("/api/search", files={"file": ("q.png", buf.getvalue(), "image/png")},
                    data={"options": json.dumps({"top_k": 1, "group_by": "video"})})
    assert r.status_code == 200, r.text
    assert r.json()["hits"][0]["path"] == "sub/blue_square.mp4"
    clip = Path(easy_videos[2]).read_bytes()
    r = client.post("/api/search", files={"file": ("q.mp4", clip, "video/mp4")}, data={"options": "{}"})
    assert r.json()["hits"][0]["path"] == "green_triangle.mp4"
    r = client.post("/api/search", files={"file": ("q.txt", b"hello", "text/plain")})
    assert r.status_code == 400 and "not an image or video" in r.json()["error"]
    r = client.post("/api/search", files={"file": ("q.mp4", b"<!doctype html><html>", "video/mp4")})
    assert r.status_code == 422 and "Traceback" not in r.text


# ---------------------------------------------------------------- browsing and media
def test_videos_pages_and_detail(client):
    first = client.get("/api/videos?limit=4").json()
    assert first["total"] == 5 and len(first["videos"]) == 4 and first["next_cursor"]  # the link out is not listed
    rest = client.get(f"/api/videos?limit=4&cursor={first['next_cursor']}").json()
    assert len(rest["videos"]) == 1 and rest["next_cursor"] is None
    sub = client.get("/api/videos?path_prefix=sub/").json()
    assert sub["total"] == 2
    v = next(v for v in first["videos"] if v["path"] == "red_circle.mp4")
    d = client.get(f"/api/videos/{v['id']}").json()
    assert d["path"] == "red_circle.mp4" and len(d["segments"]) == d["entries"] >= 2 and d["playable"] is True
    assert d["segments"][0]["start"] == 0 and d["segments"][-1]["end"] == pytest.approx(d["duration"], abs=0.01)


def _video_id(client, name: str) -> int:
    return next(v["id"] for v in client.get("/api/videos?limit=50").json()["videos"] if v["path"] == name)


def test_thumbnail_is_the_right_frame_and_cached(client):
    vid = _video_id(client, "red_circle.mp4")
    r = client.get(f"/api/videos/{vid}/thumbnail?t=0.5&width=64")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    img = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), dtype=float)
    assert img.shape[1] == 64
    red = (img[..., 0] > 150) & (img[..., 1] < 90) & (img[..., 2] < 90)
    assert red.mean() > 0.05  # the red circle is in the picture
    again = client.get(f"/api/videos/{vid}/thumbnail?t=0.5&width=64", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert client.get(f"/api/videos/{vid}/thumbnail?t=-1").status_code == 422


def test_stream_supports_ranges(client, library):
    vid = _video_id(client, "red_circle.mp4")
    data = (library / "red_circle.mp4").read_bytes()
    r = client.get(f"/api/videos/{vid}/stream")
    assert r.status_code == 200 and r.content == data and r.headers["content-type"] == "video/mp4"
    assert r.headers["accept-ranges"] == "bytes"
    r = client.get(f"/api/videos/{vid}/stream", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == data[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{len(data)}"
    r = client.get(f"/api/videos/{vid}/stream", headers={"Range": "bytes=-10"})
    assert r.status_code == 206 and r.content == data[-10:]
    r = client.get(f"/api/videos/{vid}/stream", headers={"Range": f"bytes={len(data) + 5}-"})
    assert r.status_code == 416


def test_preview_is_webm_of_the_moment(client):
    vid = _video_id(client, "sub/blue_square.mp4")
    r = client.get(f"/api/videos/{vid}/preview.webm?start=0.5&end=1.5")
    assert r.status_code == 200 and r.headers["content-type"] == "video/webm"
    with av.open(io.BytesIO(r.content)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "vp9"
        n = sum(1 for _ in c.decode(video=0))
    assert 6 <= n <= 10  # 1 s at 8 fps
    r = client.get(f"/api/videos/{vid}/preview.webm?start=1.5&end=0.5")
    assert r.status_code == 400 and "end" in r.json()["error"]


def test_caption_ask_classify(client):
    vid = _video_id(client, "red_circle.mp4")
    r = client.post(f"/api/videos/{vid}/caption", json={"start": 0, "end": 1, "method": "greedy"})
    assert r.status_code == 200 and "circle" in r.json()["caption"]
    r = client.post(f"/api/videos/{vid}/ask", json={"question": "what colour is the circle?"})
    assert r.status_code == 200 and r.json()["answer"] == "red"
    assert client.post(f"/api/videos/{vid}/ask", json={"question": ""}).status_code == 422
    r = client.post(f"/api/videos/{vid}/caption", json={"start": 2, "end": 1})
    assert r.status_code == 422 and "must be after start" in r.json()["error"]
    entry = client.get(f"/api/videos/{vid}").json()["segments"][0]["entry_id"]
    r = client.post("/api/classify", json={"entry_id": entry, "labels": ["a blue square", "a red circle"], "top_k": 2})
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "a red circle"
    r = client.post("/api/classify", json={"entry_id": entry, "label_set": "ucf101", "top_k": 3})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 3
    r = client.post("/api/classify", json={"entry_id": entry, "label_set": "nope"})
    assert r.status_code == 400 and "nope" in r.json()["error"]
    assert client.post("/api/classify", json={"entry_id": entry}).status_code == 422


# ---------------------------------------------------------------- hostile requests
def test_unknown_ids_traversal_and_symlinks(client, library):
    for url in ("/api/videos/999999", "/api/videos/999999/stream", "/api/videos/999999/thumbnail",
                "/api/jobs/nope"):
        r = client.get(url)
        assert r.status_code == 404 and "error" in r.json(), url
    for url in ("/api/videos/..%2F..%2Fetc%2Fpasswd/stream", "/api/videos/%2e%2e/stream",
                "/api/videos/1%00/stream"):
        r = client.get(url)
        assert r.status_code in (404, 422) and "root:" not in r.text, url
    for url in ("/../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/static/..%2f..%2fetc/passwd"):
        r = client.get(url)
        assert r.status_code == 404 and "root:" not in r.text, url
    listed = {v["path"] for v in client.get("/api/videos?limit=50").json()["videos"]}
    assert "escape.mp4" not in listed and len(listed) == 5  # indexed, but it resolves outside the library
    lib = client.app.state.library
    vid = next(v.id for v in lib.index.all_videos() if v.path.endswith("escape.mp4"))
    for url in (f"/api/videos/{vid}/stream", f"/api/videos/{vid}/thumbnail", f"/api/videos/{vid}/preview.webm"):
        assert client.get(url).status_code == 404, url
    assert client.post(f"/api/videos/{vid}/caption", json={}).status_code == 404
    hits = search(client, text="a red circle", top_k=100)["hits"]
    assert "escape.mp4" not in {h["path"] for h in hits}


def test_internal_errors_are_json_without_trace(index_dir, tiny_model, library, monkeypatch):
    with make_client(index_dir, tiny_model, library) as c:
        lib = c.app.state.library
        monkeypatch.setattr(lib, "stats", lambda: 1 / 0)
        r = c.get("/api/stats")
        assert r.status_code == 500 and r.json() == {"error": "internal server error; the server log has the details"}
        assert "ZeroDivision" not in r.text and "Traceback" not in r.text


def test_security_headers_and_no_cors_by_default(client):
    r = client.get("/api/health", headers={"Origin": "http://evil.example"})
    assert r.headers["x-content-type-options"] == "nosniff" and "default-src 'self'" in r.headers["content-security-policy"]
    assert "access-control-allow-origin" not in r.headers


def test_api_key(index_dir, tiny_model, library):
    with make_client(index_dir, tiny_model, library, api_key=KEY) as c:
        assert c.get("/api/health").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEY[:-1]}):
            r = c.get("/api/stats", headers=headers)
            assert r.status_code == 401 and "API key" in r.json()["error"]
        assert c.get("/metrics").status_code == 401
        assert c.get("/api/stats", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert c.get("/api/stats", headers={"X-API-Key": KEY}).status_code == 200
        assert c.post("/api/login", json={"key": "wrong"}).status_code == 401
        r = c.post("/api/login", json={"key": KEY})
        assert r.status_code == 200 and KEY not in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
        assert c.get("/api/stats").status_code == 200  # the cookie now
        assert c.get("/").status_code == 200  # the UI page itself holds no data


def test_settings_refuse_open_binding():
    with pytest.raises(OptionError, match="--api-key"):
        ServeSettings(host="0.0.0.0")
    with pytest.raises(OptionError, match="at least 16"):
        ServeSettings(api_key="short")
    assert ServeSettings(host="0.0.0.0", no_auth=True).host == "0.0.0.0"
    assert ServeSettings(host="::1").host == "::1"


def test_read_only_refuses_mutations(index_dir, tiny_model, library):
    with make_client(index_dir, tiny_model, library, read_only=True) as c:
        vid = _video_id(c, "red_circle.mp4")
        for r in (c.post("/api/index/update"), c.delete(f"/api/videos/{vid}"),
                  c.post("/api/videos", files={"file": ("a.mp4", b"x", "video/mp4")})):
            assert r.status_code == 403 and "read-only" in r.json()["error"]
        assert search(c, text="a red circle", top_k=1)["hits"]  # reading still works
    assert (library / "red_circle.mp4").exists()


# ---------------------------------------------------------------- ingest and jobs
@pytest.fixture
def writable(tmp_path, tiny_model, easy_videos):
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(easy_videos[0], lib)
    with VideoIndex(tmp_path / "idx", tiny_model, segment=1.0) as index:
        index.add([lib])
    with make_client(tmp_path / "idx", tiny_model, lib, max_upload_bytes=200_000) as c:
        yield c, lib


def test_upload_becomes_searchable_and_delete_removes(writable, easy_videos):
    c, lib = writable
    r = c.post("/api/videos", files={"file": ("../../My Clip.mp4", Path(easy_videos[3]).read_bytes(), "video/mp4")})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["path"] == "uploads/My Clip.mp4" and (lib / "uploads" / "My Clip.mp4").is_file()
    job = wait_job(c, body["job"]["id"])
    assert job["state"] == "done" and job["result"]["added"] == 1 and job["progress"] == 1.0
    hits = search(c, text="a yellow star", group_by="video", top_k=1)["hits"]
    assert hits[0]["path"] == "uploads/My Clip.mp4"
    r = c.post("/api/videos", files={"file": ("My Clip.mp4", Path(easy_videos[3]).read_bytes(), "video/mp4")})
    assert r.json()["path"] == "uploads/My Clip-1.mp4"  # never overwrites
    wait_job(c, r.json()["job"]["id"])
    r = c.delete(f"/api/videos/{hits[0]['video_id']}")
    assert r.status_code == 202
    assert wait_job(c, r.json()["job"]["id"])["result"] == {"removed": 1}
    assert not (lib / "uploads" / "My Clip.mp4").exists()
    assert c.get(f"/api/videos/{hits[0]['video_id']}").status_code == 404
    assert c.delete("/api/videos/999999").status_code == 404


def test_bad_uploads(writable):
    c, lib = writable
    r = c.post("/api/videos", files={"file": ("page.mp4", b"<!DOCTYPE html><html><body>hi</body></html>", "video/mp4")})
    assert r.status_code == 415 and "HTML" in r.json()["error"]
    r = c.post("/api/videos", files={"file": ("big.mp4", b"\0" * 300_000, "video/mp4")})
    assert r.status_code == 413 and "limit" in r.json()["error"]
    r = c.post("/api/videos", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert r.status_code == 400 and "allowed" in r.json()["error"]
    r = c.post("/api/videos", data={"x": "1"})
    assert r.status_code == 400 and "'file'" in r.json()["error"]
    assert sorted(p.name for p in lib.rglob("*") if p.is_file()) == ["red_circle.mp4"]


def test_rescan_job_events(writable, easy_videos):
    c, lib = writable
    shutil.copy(easy_videos[1], lib)
    shutil.copy(easy_videos[2], lib)
    job = c.post("/api/index/update").json()["job"]
    events = []
    with c.stream("GET", f"/api/jobs/{job['id']}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    assert events[-1][0] == "end" and events[-1][1]["state"] == "done"
    assert events[-1][1]["result"]["added"] == 2 and events[-1][1]["result"]["unchanged"] == 1
    done = [e["done"] for _, e in events]
    assert done == sorted(done) and events[-1][1]["total"] == 2
    assert c.get("/api/jobs").json()["jobs"][0]["id"] == job["id"]
    assert c.get("/api/stats").json()["videos"] == 3


def test_metrics(client):
    search(client, text="a red circle")
    text = client.get("/metrics").text
    assert 'videococa_http_requests_total{method="POST",route="/api/search",status="200"}' in text
    assert "videococa_http_request_duration_seconds_bucket" in text and "videococa_model_queue_depth" in text


# ---------------------------------------------------------------- the model engine batches
class SlowText:
    def __init__(self):
        self.calls = []

    def encode_text(self, texts):
        import torch

        self.calls.append(len(texts))
        time.sleep(0.2)
        return torch.ones(len(texts), 4)


def test_engine_batches_concurrent_text_queries():
    model = SlowText()
    engine = Engine(model)
    try:
        futures = [engine.encode_text(f"q{i}") for i in range(9)]
        call = engine.call(lambda m: "after")
        assert all(f.result(timeout=10).shape == (4,) for f in futures) and call.result(timeout=10) == "after"
        assert sum(model.calls) == 9 and len(model.calls) <= 3  # the first alone, then the rest together
    finally:
        engine.close()
