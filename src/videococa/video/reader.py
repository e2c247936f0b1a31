"""read_video / read_clips: a file in, normalised model-ready frames out."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal, Sequence

import torch

from ..errors import OptionError, VideoDecodeError
from ..limits import CHUNK_FRAMES, MAX_READ_FRAMES
from ..paths import display
from .decode import VideoInfo, open_video
from .sampling import WINDOW_SAMPLINGS, Sampling, check_sampling, clip_windows, random_times, uniform_times
from .transforms import Preprocess, resolve_preprocess


@dataclass
class Clip:
    """T frames read from one video, ready for the model."""

    path: str
    """The file they came from, as given."""
    frames: torch.Tensor
    """(T, 3, size, size) float32, resized, cropped and normalised by the reader's `Preprocess`."""
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
    truncated_at: float | None = None
    """Where the file's decodable data ends (seconds) when it is cut off before its stated duration, else None;
    the window then ends there (`end`), and windows past it are not made."""
    sampling: str = "uniform"
    """How the frames were chosen (see `SAMPLINGS`). With `keyframes`, each frame is the keyframe nearest its
    requested time, and `timestamps` are the keyframes' own times, which may differ from `requested_times`."""




def _check_num_frames(num_frames: int) -> None:
    if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1:
        raise OptionError(f"num_frames must be a positive integer, got {num_frames!r}")
    if num_frames > MAX_READ_FRAMES:
        raise OptionError(f"num_frames={num_frames} is more than {MAX_READ_FRAMES} frames per clip, which all sit in memory "
                         f"together; sample fewer frames, or cut long videos into segments")


def _window(info: VideoInfo, start: float | None, end: float | None) -> tuple[float, float]:
    lo = 0.0 if start is None else float(start)
    hi = info.duration if end is None else min(float(end), info.duration)
    if lo < 0:
        raise OptionError(f"start={start} is negative")
    if info.is_image:
        return 0.0, 0.0
    if lo >= info.duration and info.duration > 0:
        raise OptionError(f"start={start} s is at or past the end of {info.path!r} ({info.duration:.3f} s long)")
    if end is not None and hi <= lo:
        raise OptionError(f"end={end} must be after start={lo}")
    return lo, hi


def _read(windows_times, info_src, preprocess: Preprocess, sampling: str = "uniform"
          ) -> list[tuple[torch.Tensor, list[float]]]:
    flat = [t for times in windows_times for t in times]
    pick = info_src.keyframes_at if sampling == "keyframes" else info_src.frames_at
    frames, stamps = pick(flat, preprocess.crop)  # each (3, size, size) uint8, cropped as decoded
    out, i = [], 0
    for times in windows_times:
        n = len(times)
        out.append((preprocess.normalize(torch.stack(frames[i : i + n])), stamps[i : i + n]))
        i += n
    return out


def read_video(
    path: str | os.PathLike,
    num_frames: int = 8,
    *,
    sampling: Sampling = "uniform",
    start: float | None = None,
    end: float | None = None,
    preprocess: Preprocess | None = None,
    seed: int | None = None,
    size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Clip:
    """Read `num_frames` frames from a video (or still image) as a Clip.

    sampling: `uniform` takes the centre of each of T equal segments of [start, end];
    `random` one random time in each segment (seeded by `seed`). Each frame is the one
    displayed at its time, found by seeking (the whole file is not decoded).
    `keyframes` (opt-in, for very large libraries) takes the uniform times but answers each with the keyframe
    nearest to it, decoding nothing else; `Clip.timestamps` then reports the keyframes' own times.
    end past the duration is clamped to it. Raises VideoDecodeError for unreadable files.

    preprocess: how frames become model input; give the model's own (`preprocess=model.preprocess`, or call
    `model.read_video(path, ...)`). Without it, the older `size`/`mean`/`std` keywords apply (default 224 px
    and CLIP's normalisation); giving both is a ValueError.
    """
    _check_num_frames(num_frames)
    preprocess = resolve_preprocess(preprocess, size, mean, std)
    check_sampling(sampling)
    src = open_video(path)
    try:
        lo, hi = _window(src.info, start, end)

        def sample(lo: float, hi: float) -> list[float]:
            return random_times(num_frames, lo, hi, seed) if sampling == "random" else uniform_times(num_frames, lo, hi)

        times = sample(lo, hi)
        ((frames, stamps),) = _read([times], src, preprocess, sampling)
        cut = src.truncated_at
        if cut is not None and hi > cut:  # the file ends early: sample only what is really there
            if lo >= cut:
                raise VideoDecodeError(f"{display(path)!r}: truncated: the data ends at {cut:.2f} s of a stated "
                                       f"{src.info.duration:.2f} s, before the requested start {lo:.2f} s")
            hi = cut
            times = sample(lo, hi)
            ((frames, stamps),) = _read([times], src, preprocess, sampling)
        return Clip(str(path), frames, stamps, src.info, lo, hi, times, truncated_at=cut, sampling=sampling)
    finally:
        src.close()


def iter_clips(
    path: str | os.PathLike,
    num_frames: int = 8,
    *,
    num_clips: int | None = None,
    segment: float | None = None,
    windows: Callable[[float], Sequence[tuple[float, float]]] | None = None,
    preprocess: Preprocess | None = None,
    size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    chunk_frames: int | None = None, sampling: Literal["uniform", "keyframes"] = "uniform",
) -> Iterator[list[Clip]]:
    """The windows of one long video as lists of Clips, about `chunk_frames` frames at a time, from one open file.

    Memory stays bounded however long the video is. When the file turns out to be cut off (its data ends
    before its stated duration), the window that reaches past the end is shortened to it, later windows are
    not made, and every clip from then on carries `truncated_at`. `preprocess` (or the older size/mean/std)
    and `sampling` (uniform: exact frames, or keyframes) as in `read_video`."""
    _check_num_frames(num_frames)
    check_sampling(sampling, WINDOW_SAMPLINGS)
    preprocess = resolve_preprocess(preprocess, size, mean, std)
    if windows is not None and (num_clips is not None or segment is not None):
        raise OptionError("give exactly one of num_clips, segment and windows")
    src = open_video(path)
    try:
        try:
            planned = (sorted(windows(src.info.duration)) if windows is not None else
                       clip_windows(src.info.duration, num_clips=num_clips, segment=segment))
        except ValueError as exc:  # e.g. a corrupt header stating a duration of years
            raise VideoDecodeError(f"{display(path)!r}: {exc}") from None
        per = max(1, (chunk_frames or CHUNK_FRAMES) // num_frames)  # CHUNK_FRAMES read at call time
        cut: float | None = None
        held: list[Clip] = []

        def clamp(part):  # windows sorted by start: those that start past the data are dropped
            return [(lo, min(hi, cut)) for lo, hi in part if lo < cut]

        for i in range(0, len(planned), per):
            part = planned[i : i + per] if cut is None else clamp(planned[i : i + per])
            if not part:
                break
            read = _read([uniform_times(num_frames, lo, hi) for lo, hi in part], src, preprocess, sampling)
            if cut is None and src.truncated_at is not None and max(hi for _, hi in part) > src.truncated_at:
                cut = src.truncated_at  # the file ends early: re-plan the windows that reach past its data
                part = clamp(part)
                read = _read([uniform_times(num_frames, lo, hi) for lo, hi in part], src, preprocess, sampling)
            clips = [Clip(str(path), frames, stamps, src.info, lo, hi, uniform_times(num_frames, lo, hi), cut, sampling)
                     for (frames, stamps), (lo, hi) in zip(read, part)]
            if clips:
                if held:
                    yield held
                held = clips  # one chunk is held back: the cut may only show when the next one is read
        if not held:
            raise VideoDecodeError(f"{display(path)!r}: truncated or corrupt video (no frame could be decoded)")
        for c in held:  # the last clips always say whether the file was cut off
            c.truncated_at = cut
        yield held
    finally:
        src.close()


def read_clips(
    path: str | os.PathLike,
    num_frames: int = 8,
    *,
    num_clips: int | None = None,
    segment: float | None = None,
    windows: Callable[[float], Sequence[tuple[float, float]]] | None = None,
    preprocess: Preprocess | None = None,
    size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    sampling: Literal["uniform", "keyframes"] = "uniform",
) -> list[Clip]:
    """Several windows of one long video, T uniform frames each, read in one pass.

    Give `num_clips` (equal windows over the whole video), `segment` (windows of that many seconds) or
    `windows` (a function of the duration in seconds giving (start, end) windows, e.g. `sliding_windows`).
    A truncated file gives only the windows its data covers (see `iter_clips`). `preprocess` (or the older
    size/mean/std) as in `read_video`; `sampling` uniform or keyframes.
    """
    return [c for chunk in iter_clips(path, num_frames, num_clips=num_clips, segment=segment, windows=windows,
                                      preprocess=preprocess, size=size, mean=mean, std=std, sampling=sampling)
            for c in chunk]


__all__ = ["Clip", "VideoDecodeError", "iter_clips", "read_clips", "read_video"]
