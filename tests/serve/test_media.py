"""Service media: thumbnails and previews show the right frames and are cached safely."""

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
from videococa.serve.media import MediaCache, preview, thumbnail
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
