"""Service media: thumbnails and previews show the right frames and are cached safely; uploads and paths are checked."""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from videococa.errors import OptionError, VideoDecodeError
from videococa.serve import media
from videococa.serve.media import (MediaCache, browser_playable, check_upload, inside, media_type, preview,
                                   safe_upload_name, sniff_video, thumbnail)
from videococa.testing import write_audio_only, write_video
from videococa.video.decode import decode_frames_at

COLOURS = [(230, 30, 30), (30, 230, 30), (30, 30, 230), (230, 230, 30)]
"""Colour of second 0, 1, 2 and 3 of every test video (10 frames each at 10 fps)."""


def write_solid(path, codec: str = "libx264", *, colours=COLOURS, per: int = 10, fps: int = 10,
                size: tuple[int, int] = (64, 48), rotation: int | None = None) -> str:
    """A video of solid colours, each shown for `per` frames; with `rotation`, the left half is always white."""
    w, h = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(per * len(colours)):
            img = np.full((h, w, 3), colours[i // per], np.uint8)
            if rotation is not None:
                img[:, : w // 2] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return str(path)


def load(path) -> Image.Image:
    """An image file's pixels (the file closed again)."""
    with Image.open(path) as im:
        return im.convert("RGB")


def mean_colour(img) -> np.ndarray:
    return np.asarray(img, dtype=float).reshape(-1, 3).mean(0)


def assert_colour(img, colour, tol: float = 40) -> None:
    got = mean_colour(img)
    assert np.abs(got - colour).max() < tol, f"colour {got.round()} is not {colour}"


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("videos")
    return {"mp4": write_solid(root / "solid.mp4"), "avi": write_solid(root / "solid.avi", "mpeg4")}


@pytest.fixture
def cache(tmp_path) -> MediaCache:
    return MediaCache(tmp_path / "cache")


def decoded(path) -> tuple[str, str, float, list[av.VideoFrame]]:
    """(container format, codec, duration in seconds, every frame) of a file, read back with PyAV."""
    with av.open(str(path)) as c:
        return c.format.name, c.streams.video[0].codec_context.name, c.duration / av.time_base, list(c.decode(video=0))


# --------------------------------------------------------------------------- thumbnails
@pytest.mark.parametrize("kind", ["mp4", "avi"])
def test_thumbnail_shows_the_frame_at_t(kind, videos, cache):
    for t, colour in [(0.0, 0), (0.95, 0), (1.05, 1), (2.5, 2), (3.5, 3)]:
        thumb = thumbnail(cache, videos[kind], t)
        with Image.open(thumb.path) as im:
            assert im.format == "JPEG" and im.size == (320, 240)
            assert_colour(im, COLOURS[colour])
        assert thumb.t == pytest.approx(round(t, 1))
    late = thumbnail(cache, videos[kind], 99.0, width=100)
    assert late.t == pytest.approx(4.0, abs=0.11)  # clamped into the duration: the last frame
    with Image.open(late.path) as im:
        assert im.size == (100, 75)
        assert_colour(im, COLOURS[3])
    assert load(thumbnail(cache, videos[kind], 0, width=3).path).size == (16, 12)
    assert load(thumbnail(cache, videos[kind], 0, width=5000).path).size == (1280, 960)


def test_thumbnail_is_cached_by_source_identity_and_request(videos, tmp_path, cache):
    src = tmp_path / "v.mp4"
    src.write_bytes(Path(videos["mp4"]).read_bytes())
    a = thumbnail(cache, str(src), 1.52)
    made = a.path.stat().st_mtime_ns
    b = thumbnail(cache, str(src), 1.54)  # rounds to the same 0.1 s
    assert (b.path, b.etag, b.t) == (a.path, a.etag, 1.5) and b.path.stat().st_mtime_ns == made
    assert a.etag.startswith('"') and a.etag.endswith('"') and len(a.etag) > 10
    assert thumbnail(cache, str(src), 1.5, width=64).etag != a.etag
    assert thumbnail(cache, str(src), 1.7).etag != a.etag

    write_solid(src, colours=COLOURS[::-1])  # rewritten in place: new content and mtime
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    c = thumbnail(cache, str(src), 1.52)
    assert c.etag != a.etag and c.path != a.path
    assert_colour(load(c.path), COLOURS[2])


def test_thumbnail_of_still_image_and_animated_gif(tmp_path, cache):
    png = tmp_path / "still.png"
    Image.new("RGB", (80, 40), COLOURS[2]).save(png)
    thumb = thumbnail(cache, str(png), 7.0, width=40)
    assert thumb.t == 0.0 and load(thumb.path).size == (40, 20)
    assert_colour(load(thumb.path), COLOURS[2])

    gif = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (32, 32), c) for c in COLOURS[:2]]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=500, loop=0)
    assert_colour(load(thumbnail(cache, str(gif), 0.2).path), COLOURS[0])
    assert_colour(load(thumbnail(cache, str(gif), 0.7).path), COLOURS[1])


@pytest.mark.parametrize("t", [-1.0, math.nan, math.inf, "1"])
def test_thumbnail_refuses_a_bad_time(t, videos, cache):
    with pytest.raises(OptionError, match="^t must be"):
        thumbnail(cache, videos["mp4"], t)


def test_thumbnail_of_a_corrupt_or_missing_file_names_it(tmp_path, cache):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypisom" + os.urandom(2000))
    with pytest.raises(VideoDecodeError, match="broken.mp4"):
        thumbnail(cache, str(bad), 0.0)
    with pytest.raises(VideoDecodeError, match="gone.mp4.*not found"):
        thumbnail(cache, str(tmp_path / "gone.mp4"), 0.0)
    assert list(cache.root.iterdir()) == []  # nothing half-written is left


# --------------------------------------------------------------------------- previews
def test_preview_is_vp9_webm_of_the_window(videos, cache):
    out = preview(cache, videos["mp4"], 1.0, 3.0, max_height=32)
    fmt, codec, duration, frames = decoded(out)
    assert "webm" in fmt and codec == "vp9" and out.suffix == ".webm"
    assert duration == pytest.approx(2.0, abs=0.1)
    assert len(frames) == pytest.approx(20, abs=1)
    assert frames[0].pts == 0 and frames[0].time * 10 == pytest.approx(0)
    assert (frames[0].width, frames[0].height) == (42, 32)  # 64x48 scaled to 32 high, even width
    assert_colour(frames[0].to_ndarray(format="rgb24"), COLOURS[1])  # the source at start=1.0
    assert_colour(frames[-1].to_ndarray(format="rgb24"), COLOURS[2])
    assert preview(cache, videos["mp4"], 1.0, 3.0, max_height=32) == out  # cached


def test_preview_window_is_clamped_and_cut(videos, cache):
    _, _, duration, frames = decoded(preview(cache, videos["avi"], 0.0, 100.0, max_seconds=1.5))
    assert duration == pytest.approx(1.5, abs=0.1) and len(frames) == 15
    assert (frames[0].width, frames[0].height) == (64, 48)  # never scaled up
    _, _, duration, frames = decoded(preview(cache, videos["avi"], 3.5, 10.0))
    assert duration == pytest.approx(0.5, abs=0.1)
    assert_colour(frames[0].to_ndarray(format="rgb24"), COLOURS[3])
    for start, end in [(2.0, 2.0), (2.0, 1.0)]:
        with pytest.raises(OptionError, match="end=.* must be after start="):
            preview(cache, videos["avi"], start, end)
    with pytest.raises(OptionError, match="^start must be"):
        preview(cache, videos["avi"], -1.0, 1.0)
    with pytest.raises(OptionError, match="max_seconds"):
        preview(cache, videos["avi"], 0.0, 1.0, max_seconds=0)


def test_preview_and_thumbnail_are_upright(tmp_path, cache):
    src = write_solid(tmp_path / "rotated.mp4", rotation=90)
    (want,), _, info = decode_frames_at(src, [1.5])
    assert (info.width, info.height) == (48, 64)
    _, _, _, frames = decoded(preview(cache, src, 1.0, 2.0))
    got = frames[5].to_ndarray(format="rgb24")
    assert got.shape == (64, 48, 3)
    for part in (slice(0, 24), slice(40, 64)):  # the white half and the coloured half are where decode puts them
        assert np.abs(mean_colour(got[part]) - mean_colour(want[part])).max() < 40
    thumb = load(thumbnail(cache, src, 1.5, width=48).path)
    assert thumb.size == (48, 64)
    assert np.abs(mean_colour(np.asarray(thumb)[:24]) - mean_colour(want[:24])).max() < 40


def test_simultaneous_requests_transcode_once(videos, cache, monkeypatch):
    calls = []
    real = media._transcode

    def slow(*args, **kwargs):
        calls.append(threading.get_ident())
        time.sleep(0.3)  # the second request arrives while the first is encoding
        return real(*args, **kwargs)

    monkeypatch.setattr(media, "_transcode", slow)
    barrier, results = threading.Barrier(3), []

    def ask():
        barrier.wait()
        results.append(preview(cache, videos["mp4"], 0.0, 1.0))

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(calls) == 1 and len(results) == 3 and len(set(results)) == 1 and results[0].is_file()


# --------------------------------------------------------------------------- the cache
def test_cache_evicts_least_recently_used(tmp_path):
    cache = MediaCache(tmp_path / "c", max_bytes=2500)
    made = []

    def writer(n):
        def make(tmp):
            made.append(n)
            tmp.write_bytes(b"x" * n)
        return make

    a = cache.get_or_make("a", ".jpg", writer(1000))
    b = cache.get_or_make("b", ".jpg", writer(1000))
    assert cache.get_or_make("a", ".jpg", writer(1000)) == a and made == [1000, 1000]  # a hit, and now the newest
    c = cache.get_or_make("c", ".webm", writer(1000))
    assert a.exists() and c.exists() and not b.exists()
    assert cache.size() <= 2500
    big = cache.get_or_make("big", ".webm", writer(4000))  # larger than the bound: kept alone
    assert big.exists() and [p for _, _, p in cache.entries()] == [big]


def test_cache_leaves_no_partial_file(tmp_path):
    cache = MediaCache(tmp_path / "c")
    stale = cache.root / "k.jpg.999999999.part"  # a writer that was killed (no such pid)
    stale.write_bytes(b"half")

    def fails(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.get_or_make("k", ".jpg", fails)
    assert list(cache.root.iterdir()) == [stale]
    cache.get_or_make("k", ".jpg", lambda tmp: tmp.write_bytes(b"whole"))
    assert sorted(p.name for p in cache.root.iterdir()) == ["k.jpg"]
    with pytest.raises(OptionError, match="max_bytes"):
        MediaCache(tmp_path / "d", max_bytes=0)


# --------------------------------------------------------------------------- uploads
def test_sniff_video(videos, tmp_path, cache):
    gif = tmp_path / "a.gif"
    Image.new("RGB", (8, 8)).save(gif)
    webm = preview(cache, videos["mp4"], 0.0, 0.5)
    for path, kind in [(videos["mp4"], "mp4"), (videos["avi"], "avi"), (webm, "webm/mkv"), (gif, "gif")]:
        assert sniff_video(path) == kind
        assert sniff_video(Path(path).read_bytes()[: 64 if kind != "gif" else 6]) == kind
    ts = bytearray(400)
    ts[0] = ts[188] = 0x47
    heads = {b"OggS\x00\x02": "ogg", b"FLV\x01\x05": "flv", bytes(ts): "mpeg-ts", b"\x00\x00\x01\xba\x44": "mpeg-ps",
             bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c") + b"\x00" * 8: "asf",
             b"\x00\x00\x00\x14ftypqt  ": "mp4", b"\x00\x00\x00\x14ftyp3gp4": "mp4"}
    for head, kind in heads.items():
        assert sniff_video(head) == kind
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    assert sniff_video(fifo) is None and sniff_video(tmp_path) is None  # not opened: a FIFO would block
    for head in [b"<!doctype html><html>", b'{"error": "not found"}', b"", b"hello", b"\x89PNG\r\n\x1a\n", bytes(400)]:
        assert sniff_video(head) is None


def test_check_upload(videos, tmp_path):
    assert check_upload(videos["mp4"]) == "mp4" and check_upload(videos["avi"]) == "avi"
    html = tmp_path / "x.mp4"
    html.write_text("<!DOCTYPE html>\n<html><body>Sign in</body></html>")
    with pytest.raises(VideoDecodeError, match=r"^'x.mp4' is not a video \(it looks like an HTML page"):
        check_upload(html)
    for data, what in [(b'{"a": 1}', "JSON"), (b"just words", "a text file"), (b"\x89PNG\r\n\x1a\n....", "PNG image"),
                       (b"\x01\x02\xff\xfe", "not a video format this server accepts")]:
        html.write_bytes(data)
        with pytest.raises(VideoDecodeError, match=f"^'x.mp4' is not a video \\(.*{what}"):
            check_upload(html)
    audio = write_audio_only(tmp_path / "song.mp4")
    with pytest.raises(VideoDecodeError, match="^'song.mp4': has no video stream") as err:
        check_upload(audio)
    assert str(tmp_path) not in str(err.value)  # the server's folder is not shown to the client
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(Path(videos["mp4"]).read_bytes()[:300])
    with pytest.raises(VideoDecodeError, match="cut.mp4"):
        check_upload(cut)
    (tmp_path / "empty.webm").write_bytes(b"")
    with pytest.raises(VideoDecodeError, match="empty"):
        check_upload(tmp_path / "empty.webm")


@pytest.mark.parametrize("name, safe", [
    ("../../etc/passwd.mp4", "passwd.mp4"),
    ("a/b\\c.mp4", "c.mp4"),
    (".hidden.mp4", "hidden.mp4"),
    ("x\x00y.mp4", "xy.mp4"),
    ("C:\\Users\\me\\Holiday 2024.MOV", "Holiday 2024.MOV"),
    ("\x1b[31mred\x1b[0m.webm", "[31mred[0m.webm"),
    ("é" * 300 + ".mkv", "é" * 98 + ".mkv"),  # 200 bytes of UTF-8, cut between characters
    ("clip\u202egpj.mp4", "clipgpj.mp4"),  # a right-to-left override that would show 'clip4pm.jpg'
])
def test_safe_upload_name(name, safe):
    assert safe_upload_name(name) == safe
    assert len(safe_upload_name(name).encode()) <= 200


@pytest.mark.parametrize("name, message", [
    ("notes.txt", r"'notes.txt' does not end in a video suffix; allowed: .mp4, .webm, .mov, .mkv, .avi, \.\.\."),
    ("", "is empty"), ("..", "is empty"), ("a/", "is empty"), ("/.mp4", "does not end in a video suffix"),
])
def test_safe_upload_name_refuses(name, message):
    with pytest.raises(OptionError, match=message):
        safe_upload_name(name)


# --------------------------------------------------------------------------- serving originals
def test_inside(tmp_path):
    lib, sibling, outside = tmp_path / "lib", tmp_path / "lib2", tmp_path / "secret.mp4"
    (lib / "sub").mkdir(parents=True)
    sibling.mkdir()
    for f in (lib / "sub" / "v.mp4", sibling / "v.mp4", outside):
        f.write_bytes(b"x")
    (lib / "escape.mp4").symlink_to(outside)
    (lib / "inner.mp4").symlink_to(lib / "sub" / "v.mp4")
    root = str(lib)
    assert inside(root, str(lib / "sub" / "v.mp4")) == str(lib / "sub" / "v.mp4")
    assert inside(root, "sub/v.mp4") == str(lib / "sub" / "v.mp4")  # relative to the root
    assert inside(root, str(lib / "inner.mp4")) == str(lib / "sub" / "v.mp4")
    assert inside(root + "/", str(lib / "sub" / "v.mp4")) is not None
    for bad in [str(lib / ".." / "secret.mp4"), "../secret.mp4", str(lib / "escape.mp4"), str(sibling / "v.mp4"),
                "/etc/passwd", "sub/\x00.mp4"]:
        assert inside(root, bad) is None, bad


def test_media_type():
    assert [media_type(f"a{s}") for s in (".mp4", ".M4V", ".mov", ".webm", ".mkv", ".avi", ".gif")] == [
        "video/mp4", "video/mp4", "video/quicktime", "video/webm", "video/x-matroska", "video/x-msvideo", "image/gif"]
    assert media_type("a.ts") == "video/mp2t" and media_type("a.mpg") == "video/mpeg"
    assert media_type("a.wmv") == "video/x-ms-wmv" and media_type("a.3gp") == "video/3gpp"
    assert media_type("a.ogv") == "video/ogg" and media_type("a.flv") == "video/x-flv"
    assert media_type("notes.txt") == media_type("noext") == "application/octet-stream"


def test_browser_playable(videos, tmp_path, cache):
    assert browser_playable(videos["mp4"])
    assert browser_playable(preview(cache, videos["mp4"], 0.0, 0.5))  # vp9 in webm
    assert not browser_playable(videos["avi"])  # mpeg4 in avi
    assert not browser_playable(write_video(tmp_path / "h264.mkv", num_frames=3, width=32, height=32))
    assert not browser_playable(write_video(tmp_path / "444.mp4", num_frames=3, width=32, height=32, pix_fmt="yuv444p"))
    html = tmp_path / "page.mp4"
    html.write_text("<html></html>")
    assert not browser_playable(html) and not browser_playable(tmp_path / "missing.mp4")
