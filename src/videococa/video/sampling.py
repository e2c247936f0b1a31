"""Which times to sample: pure functions of durations and counts (no decoding here)."""

from __future__ import annotations

import math
import random
from typing import Literal

from ..limits import MAX_SEGMENT

Sampling = Literal["uniform", "random"]
SAMPLINGS: tuple[str, ...] = ("uniform", "random")




def check_segment(segment: float | None) -> None:
    """Raise ValueError unless `segment` is None or a finite number of seconds in (0, MAX_SEGMENT]."""
    if segment is None:
        return
    if isinstance(segment, bool) or not isinstance(segment, (int, float)) or not math.isfinite(segment) \
            or not 0 < segment <= MAX_SEGMENT:
        raise ValueError(f"segment must be a number of seconds above 0 and at most {MAX_SEGMENT:g}, got {segment!r}")


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
        raise ValueError("give exactly one of num_clips and segment")
    if num_clips is not None:
        if not isinstance(num_clips, int) or num_clips < 1:
            raise ValueError(f"num_clips must be a positive integer, got {num_clips!r}")
        step = duration / num_clips
        return [(k * step, (k + 1) * step) for k in range(num_clips)]
    if segment is None:
        raise ValueError("segment must be a positive number of seconds, got None")
    check_segment(segment)
    n = max(1, math.ceil(duration / segment - 1e-9))
    return [(k * segment, min((k + 1) * segment, duration)) for k in range(n)]
