"""Encode many video files: threaded reading overlapped with the model, bad files reported and skipped."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from tqdm import tqdm

from ..models.videococa import Pooling, VideoCoCa
from ..video.loader import LoadError, VideoLoader
from ..video.reader import Clip

VIDEO_SUFFIXES = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts", ".3gp", ".ogv",
    ".gif",
})
"""File endings treated as videos when a directory is expanded."""


@dataclass
class EncodedClip:
    """One video (or one window of it) through the model."""

    clip: Clip
    """The frames read, with their timestamps and the file's info."""
    embedding: torch.Tensor
    """(E,) L2-normalised video embedding."""
    tokens: torch.Tensor | None = None
    """(Q-1, E) generative tokens for the text decoder, when asked for."""


def expand_paths(inputs: Sequence[str | os.PathLike]) -> tuple[list[str], list[LoadError]]:
    """Files as given, directories expanded recursively to their video files (sorted); missing inputs as errors."""
    paths: list[str] = []
    errors: list[LoadError] = []
    seen: set[str] = set()
    for item in inputs:
        p = os.fspath(item)
        if os.path.isdir(p):
            found = sorted(
                os.path.join(root, f)
                for root, _, files in os.walk(p)
                for f in files
                if os.path.splitext(f)[1].lower() in VIDEO_SUFFIXES and ".part" not in f
            )
            if not found:
                errors.append(LoadError(p, f"{p!r}: directory holds no video files ({', '.join(sorted(VIDEO_SUFFIXES))})"))
            new = [f for f in found if f not in seen]
        elif os.path.exists(p):
            new = [p] if p not in seen else []
        else:
            errors.append(LoadError(p, f"{p!r}: no such file or directory"))
            new = []
        seen.update(new)
        paths.extend(new)
    return paths, errors


def encode_videos(
    model: VideoCoCa,
    paths: Sequence[str | os.PathLike],
    *,
    frames: int = 8,
    batch_size: int = 4,
    workers: int = 2,
    pooling: Pooling = "attentional",
    segment: float | None = None,
    return_tokens: bool = False,
    progress: bool = False,
    desc: str = "encode",
) -> Iterator[EncodedClip | LoadError]:
    """Read and encode each path (one result per file, or per window with `segment`), in input order."""
    info = model.info
    loader = VideoLoader(paths, frames, batch_size, workers, size=info.image_size, mean=info.image_mean,
                         std=info.image_std, segment=segment)
    with tqdm(total=len(loader.paths), desc=desc, unit="video", disable=not progress, leave=False) as bar:
        for batch in loader:
            clips = batch.clips
            done: dict[int, EncodedClip] = {}
            if clips:
                for i in range(0, len(clips), 32):  # bounds memory when long files yield many windows
                    part = clips[i : i + 32]
                    out = model.encode_video(torch.stack([c.frames for c in part]), pooling=pooling,
                                             return_tokens=return_tokens)
                    emb, tok = out if return_tokens else (out, None)
                    for j, c in enumerate(part):
                        done[id(c)] = EncodedClip(c, emb[j], None if tok is None else tok[j])
            for item in batch.items:
                yield item if isinstance(item, LoadError) else done[id(item)]
            bar.update(len({x.path for x in batch.items}))
