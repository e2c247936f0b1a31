"""Batched loading: decode in worker threads so decoding overlaps with model compute."""

from __future__ import annotations

import ctypes
import os
import queue
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from .. import interrupt
from ..errors import OptionError, VideoDecodeError
from ..paths import display
from ..limits import CHUNK_FRAMES
from .decode import one_decoder_thread_here
from .reader import Clip, _check_num_frames, iter_clips, read_video
from .sampling import Sampling, check_sampling, check_segment
from .transforms import Preprocess, resolve_preprocess

@dataclass(frozen=True)
class FileIssue:
    """A file that could not be read (the run goes on without it), or a note about one: a record, not an exception."""

    path: str
    """The file, as given."""
    reason: str
    """Why, in plain words."""


LoadError = FileIssue
"""The earlier name of FileIssue (kept so code written against it still runs)."""


@dataclass
class VideoBatch:
    """One batch of results, in input order: a Clip or a FileIssue per path."""

    items: list[Clip | FileIssue]
    """Results in the order of the input paths (with `segment`, one Clip per window of a file)."""

    @property
    def clips(self) -> list[Clip]:
        """The videos that were read."""
        return [x for x in self.items if isinstance(x, Clip)]

    @property
    def errors(self) -> list[FileIssue]:
        """The videos that failed, with reasons."""
        return [x for x in self.items if isinstance(x, FileIssue)]

    @property
    def frames(self) -> torch.Tensor:
        """(B_ok, T, 3, S, S) frames of the clips that were read."""
        clips = self.clips
        if not clips:
            raise OptionError("no video in this batch could be read")
        return torch.stack([c.frames for c in clips])

    @property
    def paths(self) -> list[str]:
        """Paths of the clips that were read, aligned with `frames`."""
        return [c.path for c in self.clips]


_END = object()  # a producer's last message: the file is done


def reading_thread_init() -> None:
    """Each reading thread resizes and normalises with one torch thread and decodes with one FFmpeg thread.

    The model in the consuming thread already uses every core. A reading thread's small torch ops otherwise open
    OpenMP teams of their own that wait on cores the model holds: stacking and normalising 8 frames took 40-70 ms
    instead of 0.1-4 ms on 2 busy cores (bench/RESULTS.md, decode). Outputs are the same (elementwise kernels)."""
    _one_torch_thread_here()
    one_decoder_thread_here()


def _one_torch_thread_here() -> None:
    """torch ops in the calling thread run on one OpenMP thread; other threads keep their own count.

    Not `torch.set_num_threads(1)`: that also sets the default every thread started later takes (a model's)."""
    torch.get_num_threads()  # torch sizes this thread's OpenMP team on first use: let it, then shrink it
    try:
        ctypes.CDLL(None).omp_set_num_threads(1)  # OpenMP's setting for the calling thread only
    except (AttributeError, OSError):
        pass  # no OpenMP in the process: torch keeps its thread count here


def _read_one(path: str, kwargs: dict) -> Iterator[list[Clip]]:
    """The clips of one file, in chunks (one chunk of one clip without `segment`)."""
    if kwargs.get("segment"):
        kw = {k: v for k, v in kwargs.items() if k not in ("sampling", "seed")}
        yield from iter_clips(path, **kw, sampling="keyframes" if kwargs.get("sampling") == "keyframes" else "uniform")
    else:
        yield [read_video(path, **{k: v for k, v in kwargs.items() if k != "segment"})]


def _chunks(path: str, kwargs: dict) -> Iterator[list[Clip] | FileIssue | object]:
    """`_read_one`, then _END; a failure (also one after some chunks) is a FileIssue naming the file, then _END."""
    try:
        yield from _read_one(path, kwargs)
    except VideoDecodeError as exc:
        yield FileIssue(path, str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad file must never end the run
        yield FileIssue(path, f"{display(path)!r}: unexpected error while reading: {type(exc).__name__}: {exc}")
    yield _END


def read_file(path: str | os.PathLike, num_frames: int = 8, *, sampling: Sampling = "uniform",
              preprocess: Preprocess | None = None, seed: int | None = None,
              segment: float | None = None) -> list[Clip] | FileIssue:
    """One whole file as `VideoLoader` reads it (the same steps): its clips (one, or one per `segment`-second
    window), or the FileIssue saying why it cannot be read; a file failing part-way gives only its FileIssue.
    The per-file step that the Ray backend's decoding tasks run."""
    kwargs = dict(num_frames=num_frames, sampling=sampling, preprocess=resolve_preprocess(preprocess), seed=seed,
                  segment=segment)
    clips: list[Clip] = []
    for chunk in _chunks(str(path), kwargs):
        if chunk is _END:
            break
        if isinstance(chunk, FileIssue):
            return chunk
        clips.extend(chunk)
    return clips


def _produce(path: str, kwargs: dict, out: queue.Queue, stop: threading.Event) -> None:
    """Worker thread: put the chunks of one file on `out`, where at most one waits; give up once `stop` is set."""
    for item in _chunks(path, kwargs):
        while True:
            if stop.is_set():
                return
            try:
                out.put(item, timeout=0.1)
                break
            except queue.Full:
                continue


class VideoLoader:
    """Iterate over VideoBatch-es of `batch_size` paths, read by `workers` threads (0: in the calling thread).

    Threads, not processes: PyAV decodes and torch resizes with the GIL released, so threads overlap
    decoding with model compute, and nothing is forked. Forking a process that already runs threads
    (the model's, a progress bar's) deadlocked in CPython's after-fork handler in our test suite;
    spawn/forkserver would instead re-run every caller's script without a `__main__` guard.
    Up to `prefetch` batches of files are read ahead; results keep the input order.
    With `segment` (seconds), each file is cut into windows of that length and yields one Clip per window;
    a long file's windows are decoded `CHUNK_FRAMES` frames at a time while earlier ones are encoded, so
    memory does not grow with the length of a video. A file that fails after some of its windows were
    yielded ends with a FileIssue for it: consumers drop the windows they hold for that file.
    Frames are made model input by `preprocess` (`preprocess=model.preprocess`), or by the older
    size/mean/std keywords as in `read_video`.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        num_frames: int = 8,
        batch_size: int = 4,
        workers: int = 2,
        *,
        sampling: Sampling = "uniform",
        preprocess: Preprocess | None = None,
        seed: int | None = None,
        size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        prefetch: int = 2,
        segment: float | None = None,
    ):
        check_sampling(sampling)
        if batch_size < 1:
            raise OptionError(f"batch_size must be at least 1, got {batch_size}")
        if workers < 0:
            raise OptionError(f"workers must be 0 or more, got {workers}")
        if prefetch < 1:
            raise OptionError(f"prefetch must be at least 1, got {prefetch}")
        check_segment(segment)
        _check_num_frames(num_frames)
        self.paths = [str(p) for p in paths]
        self.batch_size = batch_size
        self.workers = workers
        self.prefetch = prefetch
        self.preprocess = resolve_preprocess(preprocess, size, mean, std)
        """How frames become model input (`preprocess=model.preprocess`; else the older size/mean/std)."""
        self._kwargs = dict(num_frames=num_frames, sampling=sampling, preprocess=self.preprocess, seed=seed,
                            segment=segment)

    def __len__(self) -> int:
        return -(-len(self.paths) // self.batch_size)

    def _files(self) -> Iterator[tuple[str, Iterator]]:
        """(path, its chunks then _END), in input order; read ahead by worker threads when there are any."""
        if self.workers == 0:
            for p in self.paths:
                yield p, _chunks(p, self._kwargs)
            return
        ahead = self.workers + self.prefetch * self.batch_size  # files being read or waiting to be consumed
        stop = threading.Event()
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="videococa-read",
                                  initializer=reading_thread_init)
        pending: deque[tuple[str, queue.Queue]] = deque()
        todo = iter(self.paths)
        try:
            while True:
                while len(pending) < ahead:
                    p = next(todo, None)
                    if p is None:
                        break
                    q: queue.Queue = queue.Queue(maxsize=1)
                    pool.submit(_produce, p, self._kwargs, q, stop)
                    pending.append((p, q))
                if not pending:
                    return
                p, q = pending.popleft()
                yield p, iter(q.get, _END)
        finally:  # finished or stopped early (break, error, Ctrl-C): release the workers, never wait for them
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)

    def __iter__(self) -> Iterator[VideoBatch]:
        """Batches of up to `batch_size` files; a long file's windows come `CHUNK_FRAMES` frames' worth at a time."""
        limit = max(self.batch_size, CHUNK_FRAMES // self._kwargs["num_frames"])  # clips per batch, at most
        items: list[Clip | FileIssue] = []
        files = 0
        for path, chunks in self._files():
            interrupt.check()  # before reading more: what was read so far has been handed out
            files += 1
            for chunk in chunks:
                if chunk is _END:
                    break
                items.extend([chunk] if isinstance(chunk, FileIssue) else chunk)
                if sum(isinstance(x, Clip) for x in items) >= limit and self._kwargs.get("segment"):
                    yield VideoBatch(items)
                    items, files = [], 1
                    interrupt.check()
            if files >= self.batch_size:
                yield VideoBatch(items)
                items, files = [], 0
        if items:
            yield VideoBatch(items)
