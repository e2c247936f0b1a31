"""Batched loading: decode in worker threads so decoding overlaps with model compute."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Sequence

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from .. import interrupt
from ..errors import VideoDecodeError
from .reader import Clip, read_clips, read_video
from .sampling import SAMPLINGS, Sampling
from .transforms import CLIP_MEAN, CLIP_STD


@dataclass(frozen=True)
class LoadError:
    """A file that could not be read; the run goes on without it."""

    path: str
    """The file, as given."""
    reason: str
    """Why, in plain words."""


@dataclass
class VideoBatch:
    """One batch of results, in input order: a Clip or a LoadError per path."""

    items: list[Clip | LoadError]
    """Results in the order of the input paths (with `segment`, one Clip per window of a file)."""

    @property
    def clips(self) -> list[Clip]:
        """The videos that were read."""
        return [x for x in self.items if isinstance(x, Clip)]

    @property
    def errors(self) -> list[LoadError]:
        """The videos that failed, with reasons."""
        return [x for x in self.items if isinstance(x, LoadError)]

    @property
    def frames(self) -> torch.Tensor:
        """(B_ok, T, 3, S, S) frames of the clips that were read."""
        clips = self.clips
        if not clips:
            raise ValueError("no video in this batch could be read")
        return torch.stack([c.frames for c in clips])

    @property
    def paths(self) -> list[str]:
        """Paths of the clips that were read, aligned with `frames`."""
        return [c.path for c in self.clips]


def _read_one(path: str, kwargs: dict) -> list[Clip] | LoadError:
    try:
        if kwargs.get("segment"):
            kw = {k: v for k, v in kwargs.items() if k not in ("sampling", "seed")}
            return read_clips(path, **kw)
        return [read_video(path, **{k: v for k, v in kwargs.items() if k != "segment"})]
    except VideoDecodeError as exc:
        return LoadError(path, str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad file must never end the run
        return LoadError(path, f"{path!r}: unexpected error while reading: {type(exc).__name__}: {exc}")


def _batch(results: list[list[Clip] | LoadError]) -> "VideoBatch":
    return VideoBatch([x for r in results for x in ([r] if isinstance(r, LoadError) else r)])


class VideoLoader:
    """Iterate over VideoBatch-es of `batch_size` paths, read by `workers` threads (0: in the calling thread).

    Threads, not processes: PyAV decodes and torch resizes with the GIL released, so threads overlap
    decoding with model compute, and nothing is forked. Forking a process that already runs threads
    (the model's, a progress bar's) deadlocked in CPython's after-fork handler in our test suite;
    spawn/forkserver would instead re-run every caller's script without a `__main__` guard.
    Up to `prefetch` batches are read ahead; results keep the input order.
    With `segment` (seconds), each file is cut into windows of that length and yields one Clip per window.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        num_frames: int = 8,
        batch_size: int = 4,
        workers: int = 2,
        *,
        sampling: Sampling = "uniform",
        size: int = 224,
        seed: int | None = None,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        prefetch: int = 2,
        segment: float | None = None,
    ):
        if sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling {sampling!r}; choose one of: {', '.join(SAMPLINGS)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if workers < 0:
            raise ValueError(f"workers must be 0 or more, got {workers}")
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        if segment is not None and not segment > 0:
            raise ValueError(f"segment must be a positive number of seconds, got {segment!r}")
        self.paths = [str(p) for p in paths]
        self.batch_size = batch_size
        self.workers = workers
        self.prefetch = prefetch
        self._kwargs = dict(num_frames=num_frames, sampling=sampling, size=size, seed=seed, mean=mean, std=std,
                            segment=segment)

    def __len__(self) -> int:
        return -(-len(self.paths) // self.batch_size)

    def __iter__(self) -> Iterator[VideoBatch]:
        batches = [self.paths[i : i + self.batch_size] for i in range(0, len(self.paths), self.batch_size)]
        if self.workers == 0:
            for batch in batches:
                interrupt.check()
                yield _batch([_read_one(p, self._kwargs) for p in batch])
            return
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="videococa-read") as pool:
            pending: deque[list[Future]] = deque()
            try:
                for batch in batches:
                    pending.append([pool.submit(_read_one, p, self._kwargs) for p in batch])
                    if len(pending) > self.prefetch:
                        interrupt.check()
                        yield _batch([f.result() for f in pending.popleft()])
                while pending:
                    interrupt.check()
                    yield _batch([f.result() for f in pending.popleft()])
            finally:  # stopped early (break, error, Ctrl-C): drop what is queued
                for futures in pending:
                    for f in futures:
                        f.cancel()
