"""read_video / read_clips: a file in, normalised model-ready frames out."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..errors import VideoDecodeError
from .decode import VideoInfo, open_video
from .sampling import SAMPLINGS, Sampling, clip_windows, random_times, uniform_times
from .transforms import CLIP_MEAN, CLIP_STD, normalize, resize_crop


@dataclass
class Clip:
    """T frames read from one video, ready for the model."""

    path: str
    """The file they came from, as given."""
    frames: torch.Tensor
    """(T, 3, size, size) float32, normalised for the model."""
    timestamps: list[float]
    """Presentation time (seconds) of each returned frame; repeated when a short video has fewer frames than T."""
    info: VideoInfo
    """What the file holds (duration, fps, size, codec, rotation, frame count)."""
    start: float = 0.0
    """Start of the sampled window (seconds)."""
    end: float = 0.0
    """End of the sampled window (seconds)."""
    requested_times: list[float] = field(default_factory=list)
    """The times that were asked for, before snapping to frames."""


def _check_num_frames(num_frames: int) -> None:
    if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")


def _window(info: VideoInfo, start: float | None, end: float | None) -> tuple[float, float]:
    lo = 0.0 if start is None else float(start)
    hi = info.duration if end is None else min(float(end), info.duration)
    if lo < 0:
        raise ValueError(f"start={start} is negative")
    if info.is_image:
        return 0.0, 0.0
    if lo >= info.duration and info.duration > 0:
        raise ValueError(f"start={start} s is at or past the end of {info.path!r} ({info.duration:.3f} s long)")
    if end is not None and hi <= lo:
        raise ValueError(f"end={end} must be after start={lo}")
    return lo, hi


def _read(windows_times, info_src, size, mean, std) -> list[tuple[torch.Tensor, list[float]]]:
    flat = [t for times in windows_times for t in times]
    frames, stamps = info_src.frames_at(flat, lambda rgb: resize_crop(rgb, size))
    out, i = [], 0
    for times in windows_times:
        n = len(times)
        out.append((normalize(torch.stack(frames[i : i + n]), mean, std), stamps[i : i + n]))
        i += n
    return out


def read_video(
    path: str | os.PathLike,
    num_frames: int = 8,
    *,
    sampling: Sampling = "uniform",
    start: float | None = None,
    end: float | None = None,
    size: int = 224,
    seed: int | None = None,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> Clip:
    """Read `num_frames` frames from a video (or still image) as a Clip.

    sampling: `uniform` takes the centre of each of T equal segments of [start, end];
    `random` one random time in each segment (seeded by `seed`). Each frame is the one
    displayed at its time, found by seeking (the whole file is not decoded).
    end past the duration is clamped to it. Raises VideoDecodeError for unreadable files.
    """
    _check_num_frames(num_frames)
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; choose one of: {', '.join(SAMPLINGS)}")
    src = open_video(path)
    try:
        lo, hi = _window(src.info, start, end)
        times = uniform_times(num_frames, lo, hi) if sampling == "uniform" else random_times(num_frames, lo, hi, seed)
        ((frames, stamps),) = _read([times], src, size, mean, std)
        return Clip(str(path), frames, stamps, src.info, lo, hi, times)
    finally:
        src.close()


def read_clips(
    path: str | os.PathLike,
    num_frames: int = 8,
    *,
    num_clips: int | None = None,
    segment: float | None = None,
    windows: Callable[[float], Sequence[tuple[float, float]]] | None = None,
    size: int = 224,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> list[Clip]:
    """Several windows of one long video, T uniform frames each, read in one pass.

    Give `num_clips` (equal windows over the whole video), `segment` (windows of that many seconds) or
    `windows` (a function of the duration in seconds giving (start, end) windows, e.g. `sliding_windows`).
    """
    _check_num_frames(num_frames)
    if windows is not None and (num_clips is not None or segment is not None):
        raise ValueError("give exactly one of num_clips, segment and windows")
    src = open_video(path)
    try:
        windows = (list(windows(src.info.duration)) if windows is not None else
                   clip_windows(src.info.duration, num_clips=num_clips, segment=segment))
        all_times = [uniform_times(num_frames, lo, hi) for lo, hi in windows]
        read = _read(all_times, src, size, mean, std)
        return [
            Clip(str(path), frames, stamps, src.info, lo, hi, times)
            for (frames, stamps), (lo, hi), times in zip(read, windows, all_times)
        ]
    finally:
        src.close()


__all__ = ["Clip", "VideoDecodeError", "read_clips", "read_video"]
