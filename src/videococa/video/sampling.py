"""Which times to sample: pure functions of durations and counts (no decoding here)."""

from __future__ import annotations

import math
import random
from typing import Literal, Sequence

from ..limits import MAX_SEGMENT, MAX_WINDOWS, MIN_SEGMENT
from ..errors import OptionError

Sampling = Literal["uniform", "random", "keyframes"]
SAMPLINGS: tuple[str, ...] = ("uniform", "random", "keyframes")
"""uniform: the centre of each of T equal segments (the default; exact frames). random: one random time in each
segment (training). keyframes: the uniform times, each answered by the keyframe nearest to it (only keyframes are
decoded: fast on long-GOP files, but the frames' times, which the Clip reports, can be seconds off)."""


WINDOW_SAMPLINGS: tuple[str, ...] = ("uniform", "keyframes")
"""The samplings of windows cut from a long video (`segment`, `num_clips`): random takes a single clip."""


def check_sampling(sampling: str, allowed: tuple[str, ...] = SAMPLINGS) -> str:
    """`sampling` if it is one of `allowed`, else an OptionError listing them."""
    if sampling not in allowed:
        raise OptionError(f"unknown sampling {sampling!r}; choose one of: {', '.join(allowed)}")
    return sampling


def check_segment(segment: float | None) -> None:
    """Raise ValueError unless `segment` is None or a finite number of seconds in [MIN_SEGMENT, MAX_SEGMENT]."""
    if segment is None:
        return
    if isinstance(segment, bool) or not isinstance(segment, (int, float)) or not math.isfinite(segment) \
            or not MIN_SEGMENT <= segment <= MAX_SEGMENT:
        raise OptionError(f"segment must be a number of seconds from {MIN_SEGMENT:g} to {MAX_SEGMENT:g}, "
                         f"got {segment!r}")


def uniform_times(num_frames: int, start: float, end: float) -> list[float]:
    """Centres of `num_frames` equal segments of [start, end] (TSN-style uniform sampling)."""
    step = (end - start) / num_frames
    return [start + (k + 0.5) * step for k in range(num_frames)]


def random_times(num_frames: int, start: float, end: float, seed: int | None = None) -> list[float]:
    """One uniformly random time inside each of `num_frames` equal segments (for training); seeded."""
    rng = random.Random(seed)
    step = (end - start) / num_frames
    return [start + (k + rng.random()) * step for k in range(num_frames)]


def clip_windows(
    duration: float,
    *,
    num_clips: int | None = None,
    segment: float | None = None,
) -> list[tuple[float, float]]:
    """Windows (start, end) covering [0, duration]: `num_clips` equal ones, or consecutive `segment`-second ones.

    With `segment`, the last window is shorter when the duration is not a multiple of it;
    a video shorter than one segment is one window.
    """
    if (num_clips is None) == (segment is None):
        raise OptionError("give exactly one of num_clips and segment")
    if num_clips is not None:
        if not isinstance(num_clips, int) or num_clips < 1:
            raise OptionError(f"num_clips must be a positive integer, got {num_clips!r}")
        step = duration / num_clips
        return [(k * step, (k + 1) * step) for k in range(num_clips)]
    if segment is None:
        raise OptionError("segment must be a positive number of seconds, got None")
    check_segment(segment)
    if not math.isfinite(duration) or duration / segment > MAX_WINDOWS:
        raise OptionError(f"a stated duration of {duration:g} s cut into {segment:g}-second windows is more than "
                         f"{MAX_WINDOWS:,} windows (a corrupt header, or use longer segments)")
    n = max(1, math.ceil(duration / segment - 1e-9))
    return [(k * segment, min((k + 1) * segment, duration)) for k in range(n)]


def sliding_windows(duration: float, *, scales: Sequence[float] = (0.125, 0.25, 0.375, 0.5),
                    stride: float = 0.5) -> list[tuple[float, float]]:
    """Multi-scale sliding windows over [0, duration] (moment retrieval candidates).

    For each scale s (a share of the duration, in (0, 1]) windows of length s * duration start every
    stride * s * duration seconds (stride 0.5: consecutive windows overlap by half); a last window is added
    flush with the end when the steps do not reach it. Sorted by (start, end), no duplicates.
    """
    if not duration > 0:
        raise OptionError(f"duration must be positive, got {duration!r}")
    if not scales or any(not 0 < s <= 1 for s in scales):
        raise OptionError(f"scales must be shares of the video in (0, 1], got {list(scales)!r}")
    if not 0 < stride <= 1:
        raise OptionError(f"stride must be a share of the window length in (0, 1], got {stride!r}")
    out = set()
    for s in scales:
        length, step = s * duration, s * stride * duration
        n = int(math.floor((duration - length) / step + 1e-9)) + 1
        starts = [k * step for k in range(n)]
        if starts[-1] + length < duration - 1e-9:
            starts.append(duration - length)
        out.update((round(a, 6), round(min(a + length, duration), 6)) for a in starts)
    return sorted(out)
