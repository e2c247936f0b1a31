"""Batched loading: decode in worker processes so decoding overlaps with model compute."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import VideoDecodeError
from .reader import Clip, read_video
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
    """Results in the order of the input paths."""

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


class _Videos(Dataset):
    def __init__(self, paths, kwargs):
        self.paths = paths
        self.kwargs = kwargs

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Clip | LoadError:
        path = self.paths[i]
        try:
            return read_video(path, **self.kwargs)
        except VideoDecodeError as exc:
            return LoadError(str(path), str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad file must never end the run
            return LoadError(str(path), f"{str(path)!r}: unexpected error while reading: {type(exc).__name__}: {exc}")


def _collate(items: list[Clip | LoadError]) -> VideoBatch:
    return VideoBatch(list(items))


class VideoLoader:
    """Iterate over VideoBatch-es of `batch_size` paths, decoded by `workers` processes (0: in this process)."""

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
    ):
        if sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling {sampling!r}; choose one of: {', '.join(SAMPLINGS)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if workers < 0:
            raise ValueError(f"workers must be 0 or more, got {workers}")
        self.paths = [str(p) for p in paths]
        kwargs = dict(num_frames=num_frames, sampling=sampling, size=size, seed=seed, mean=mean, std=std)
        self._loader = DataLoader(
            _Videos(self.paths, kwargs),
            batch_size=batch_size,
            shuffle=False,  # stable order
            num_workers=workers,
            collate_fn=_collate,
            prefetch_factor=prefetch if workers > 0 else None,
            persistent_workers=False,
        )

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[VideoBatch]:
        return iter(self._loader)
