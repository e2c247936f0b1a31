"""Decoding: seeking returns what a full sequential decode shows, on real and generated files."""

from __future__ import annotations

import random
import tracemalloc
from fractions import Fraction

import numpy as np
import pytest

from videococa import VideoDecodeError, probe, read_clips, read_video
from videococa.video import decode_all, decode_frames_at, uniform_times
from videococa.testing import reference_frame_at, sample_video, write_video

SAMPLES = {
    # name: (duration s, width, height, frames, fps)
    "bigbuckbunny.mp4": (5.28, 1280, 720, 132, 25.0),
    "bikes.mp4": (10.0, 640, 272, 250, 25.0),
    "carphone_pristine.mp4": (4.004, 176, 144, 120, 30000 / 1001),
}


@pytest.fixture(scope="module")
def references():
    return {name: list(decode_all(sample_video(name))) for name in SAMPLES}


@pytest.mark.parametrize("name", SAMPLES)
def test_probe_real_samples(name):
    duration, w, h, n, fps = SAMPLES[name]
    info = probe(sample_video(name))
    assert info.duration == pytest.approx(duration, abs=1e-6)
    assert (info.width, info.height, info.num_frames) == (w, h, n)
    assert info.fps == pytest.approx(fps)
    assert info.codec == "h264" and info.pix_fmt == "yuv420p" and info.rotation == 0


def _check_against_reference(path, ref, times):
    frames, stamps, _ = decode_frames_at(path, times)
    for t, frame, stamp in zip(times, frames, stamps):
        ref_t, ref_frame = reference_frame_at(ref, t)
        assert stamp == pytest.approx(ref_t, abs=1e-9), (t, stamp, ref_t)
        assert np.array_equal(frame, ref_frame), f"frame at t={t} differs from the full decode"


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize("num_frames", [8, 16])
def test_uniform_frames_equal_full_decode(name, num_frames, references):
    ref = references[name]
    assert len(ref) == SAMPLES[name][3]
    times = uniform_times(num_frames, 0.0, SAMPLES[name][0])
    _check_against_reference(sample_video(name), ref, times)


@pytest.mark.parametrize("name", SAMPLES)
def test_arbitrary_times_equal_full_decode(name, references):
    """Unsorted, repeated, boundary and past-the-end times, across every keyframe interval."""
    duration = SAMPLES[name][0]
    rng = random.Random(0)
    times = [rng.uniform(0, duration) for _ in range(25)] + [0.0, 0.0, duration, duration + 3, 0.04, 1.0]
    _check_against_reference(sample_video(name), references[name], times)


def test_read_video_timestamps_and_shape():
    clip = read_video(sample_video("bigbuckbunny.mp4"), 8)
    assert clip.frames.shape == (8, 3, 224, 224)
    assert clip.timestamps == pytest.approx([0.32, 0.96, 1.64, 2.28, 2.96, 3.6, 4.28, 4.92])
    assert clip.requested_times == pytest.approx(uniform_times(8, 0, 5.28))
    part = read_video(sample_video("bikes.mp4"), 4, start=2.0, end=4.0)
    assert part.timestamps == pytest.approx([2.24, 2.72, 3.24, 3.72])
    assert (part.start, part.end) == (2.0, 4.0)


def test_random_sampling_is_seeded():
    path = sample_video("bikes.mp4")
    a = read_video(path, 6, sampling="random", seed=1)
    b = read_video(path, 6, sampling="random", seed=1)
    c = read_video(path, 6, sampling="random", seed=2)
    assert a.timestamps == b.timestamps and a.timestamps != c.timestamps
    with pytest.raises(ValueError, match="unknown sampling 'dense'; choose one of: uniform, random"):
        read_video(path, 6, sampling="dense")


def test_read_clips_windows(references):
    clips = read_clips(sample_video("bikes.mp4"), 4, segment=3.0)
    assert [(c.start, c.end) for c in clips] == [(0.0, 3.0), (3.0, 6.0), (6.0, 9.0), (9.0, 10.0)]
    assert all(c.start <= t <= c.end for c in clips for t in c.timestamps)
    assert len(read_clips(sample_video("bikes.mp4"), 2, num_clips=5)) == 5


def test_bad_windows_and_counts():
    path = sample_video("bikes.mp4")
    with pytest.raises(ValueError, match="start=12 s is at or past the end"):
        read_video(path, 4, start=12)
    with pytest.raises(ValueError, match="end=1 must be after start=2.0"):
        read_video(path, 4, start=2, end=1)
    with pytest.raises(ValueError, match="num_frames must be a positive integer, got 0"):
        read_video(path, 0)


# ------------------------------------------------------------------ generated files
GENERATED = {
    "vp9.webm": dict(codec="libvpx-vp9", gop=10),
    "mpeg4.avi": dict(codec="mpeg4", gop=12),
    "h264.mov": dict(codec="libx264", gop=8),
    "h264_10bit.mkv": dict(codec="libx264", pix_fmt="yuv420p10le", gop=10),
    "h264_444.mp4": dict(codec="libx264", pix_fmt="yuv444p", gop=10),
    "gray.mkv": dict(codec="ffv1", pix_fmt="gray"),
    "odd_size.mp4": dict(codec="libx264", width=99, height=61, pix_fmt="yuv444p"),
}


@pytest.mark.parametrize("name", GENERATED)
def test_generated_formats_equal_full_decode(name, tmp_path):
    path = write_video(tmp_path / name, num_frames=40, **GENERATED[name])
    ref = list(decode_all(path))
    assert len(ref) == 40
    info = probe(path)
    assert info.duration == pytest.approx(1.6, abs=0.05)
    times = uniform_times(8, 0, info.duration) + [0.0, 0.81, 1.59]
    _check_against_reference(path, ref, times)
    clip = read_video(path, 8)
    assert clip.frames.shape == (8, 3, 224, 224)
    assert np.isfinite(clip.frames.numpy()).all()


def test_gray_frames_are_gray(tmp_path):
    path = write_video(tmp_path / "gray.mkv", codec="ffv1", pix_fmt="gray", num_frames=5)
    frames, _, info = decode_frames_at(path, [0.0])
    assert info.pix_fmt == "gray"
    rgb = frames[0].astype(int)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotated_video_comes_out_upright(tmp_path, rotation):
    coded = write_video(tmp_path / "plain.mp4", num_frames=5, width=160, height=96, options={"crf": "0"})
    rotated = write_video(tmp_path / "rot.mp4", num_frames=5, width=160, height=96, rotation=rotation,
                          options={"crf": "0"})
    info = probe(rotated)
    assert info.rotation == rotation % 360
    assert (info.width, info.height) == ((96, 160) if rotation % 180 else (160, 96))
    (plain,), _, _ = decode_frames_at(coded, [0.0])
    (upright,), _, _ = decode_frames_at(rotated, [0.0])
    # the display matrix rotates counter-clockwise by `rotation` degrees (np.rot90's sense)
    assert np.array_equal(upright, np.rot90(plain, k=rotation // 90))


def test_variable_frame_rate_uses_pts(tmp_path):
    tb = Fraction(1, 1000)
    pts = [0, 40, 80, 300, 320, 700, 710, 1500, 1540, 2000]  # ms, irregular
    path = write_video(tmp_path / "vfr.mkv", num_frames=len(pts), pts=pts, time_base=tb, codec="libx264")
    ref = list(decode_all(path))
    assert [round(t, 3) for t, _ in ref] == [p / 1000 for p in pts]
    times = [0.05, 0.2, 0.31, 0.69, 0.705, 1.0, 1.52, 1.9, 2.0]
    _check_against_reference(path, ref, times)
    _, stamps, _ = decode_frames_at(path, times)
    assert stamps == pytest.approx([0.04, 0.08, 0.3, 0.32, 0.7, 0.71, 1.5, 1.54, 2.0])


def test_single_frame_video_repeats(tmp_path):
    path = write_video(tmp_path / "one.mp4", num_frames=1)
    clip = read_video(path, 8)
    assert clip.frames.shape == (8, 3, 224, 224)
    assert clip.timestamps == [0.0] * 8
    assert all(np.array_equal(clip.frames[0], f) for f in clip.frames)


def test_short_video_repeats_nearest_frames(tmp_path):
    path = write_video(tmp_path / "three.mp4", num_frames=3, fps=10)
    clip = read_video(path, 8)
    # 0.3 s in 8 segments: centres 0.019, 0.056, 0.094, 0.131, 0.169, 0.206, 0.244, 0.281
    assert clip.timestamps == pytest.approx([0.0, 0.0, 0.0, 0.1, 0.1, 0.2, 0.2, 0.2])


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_still_images_are_one_frame_videos(tmp_path, suffix):
    from PIL import Image

    from videococa.testing import pattern

    path = tmp_path / f"still{suffix}"
    Image.fromarray(pattern(3, 90, 130)).save(path)
    clip = read_video(path, 4)
    assert clip.info.is_image and (clip.info.width, clip.info.height) == (130, 90)
    assert clip.frames.shape == (4, 3, 224, 224) and clip.timestamps == [0.0] * 4


def test_4k_video_memory_stays_bounded(tmp_path):
    path = write_video(
        tmp_path / "uhd.mp4", num_frames=30, fps=10, width=3840, height=2160, gop=10, options={"preset": "ultrafast"}
    )
    tracemalloc.start()
    try:
        clip = read_video(path, 8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    frame_bytes = 3840 * 2160 * 3
    assert clip.frames.shape == (8, 3, 224, 224)
    assert clip.info.duration == pytest.approx(3.0)
    # all 30 frames at full resolution would be 30 * 24.9 MB; we hold a few at a time
    assert peak < 6 * frame_bytes, f"peak {peak / 1e6:.0f} MB"


# ------------------------------------------------------------------ bad input
def test_truncated_mkv_decodes_what_is_there(tmp_path):
    full = write_video(tmp_path / "full.mkv", num_frames=100, gop=10, codec="libx264")
    data = open(full, "rb").read()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    clip = read_video(cut, 8)
    assert clip.frames.shape == (8, 3, 224, 224)
    assert max(clip.timestamps) < 4.0  # later frames come from what could be decoded


def test_truncated_mp4_without_index_is_an_error(tmp_path):
    full = write_video(tmp_path / "full.mp4", num_frames=50)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(open(full, "rb").read()[:3000])
    with pytest.raises(VideoDecodeError, match=r"cut\.mp4'.*truncated or corrupt"):
        read_video(cut)


def test_missing_directory_empty_text_html(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("these are my notes, not a video\n" * 20)
    html = tmp_path / "download.mp4"
    html.write_text("<!DOCTYPE html><html><body>403 Forbidden</body></html>")
    cases = [
        (tmp_path / "missing.mp4", "missing.mp4': file not found"),
        (tmp_path, "is a directory, not a video file"),
        (empty, "empty.mp4': file is empty \\(0 bytes\\)"),
        (text, "notes.mp4': not a video or image file FFmpeg can read \\(it looks like a text file\\)"),
        (html, "download.mp4': not a video or image file FFmpeg can read \\(it looks like an HTML page"),
    ]
    for path, message in cases:
        with pytest.raises(VideoDecodeError, match=message):
            read_video(path)


def test_audio_only_file(tmp_path):
    from videococa.testing import write_audio_only

    path = write_audio_only(tmp_path / "song.m4a")
    with pytest.raises(VideoDecodeError, match=r"song\.m4a': has no video stream \(audio only\)"):
        read_video(path)


def test_unsupported_codec(tmp_path):
    path = write_video(tmp_path / "clip.avi", codec="mpeg4", num_frames=5)
    data = open(path, "rb").read().replace(b"FMP4", b"QQQQ")  # a FourCC no decoder knows
    bad = tmp_path / "unknown_codec.avi"
    bad.write_bytes(data)
    with pytest.raises(VideoDecodeError, match=r"unknown_codec\.avi': unsupported video codec"):
        read_video(bad)


def test_permission_denied(tmp_path, monkeypatch):
    import os

    path = write_video(tmp_path / "locked.mp4", num_frames=3)
    if os.geteuid() != 0:
        os.chmod(path, 0)
    else:  # root reads everything: make the open fail as it would for another user
        import pathlib

        real_open = pathlib.Path.open

        def deny(self, *args, **kwargs):
            if self.name == "locked.mp4":
                raise PermissionError(13, "Permission denied", str(self))
            return real_open(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "open", deny)
    with pytest.raises(VideoDecodeError, match=r"locked\.mp4': permission denied"):
        read_video(path)
