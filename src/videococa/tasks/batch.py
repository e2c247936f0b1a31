"""Encode many video files: threaded reading overlapped with the model, bad files reported and skipped."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from tqdm import tqdm

from ..deprecation import renamed_attribute, renamed_keywords
from ..models.decoding import GenerationConfig
from ..models.videococa import Pooling, VideoCoCa
from ..paths import Scan, display, scan
from ..video.loader import FileIssue, VideoLoader
from ..video.decode import VIDEO_SUFFIXES
from ..video.reader import Clip
from ..video.sampling import Sampling


@dataclass
class EncodedClip:
    """One video (or one window of it) through the model."""

    clip: Clip
    """The frames read, with their timestamps and the file's info."""
    embedding: torch.Tensor
    """(E,) L2-normalised video embedding."""
    video_tokens: torch.Tensor | None = None
    """(Q-1, E) generative tokens for the text decoder, when asked for."""
    caption: str | None = None
    """Its caption, when asked for (`captions=`)."""

    tokens = renamed_attribute("tokens", "video_tokens")


def scan_inputs(inputs: Sequence[str | os.PathLike], *, prefer=None) -> Scan:
    """Files as given, directories expanded recursively (links followed, each real file once) to their video files.

    See `videococa.paths` for the rules (FIFOs and devices skipped, loops detected, odd names kept);
    `prefer(path)` picks which name of a file with several to keep.
    """
    return scan(inputs, VIDEO_SUFFIXES, prefer=prefer)


def scan_report(inputs: Sequence[str | os.PathLike]) -> tuple[list[str], list[FileIssue], list[FileIssue]]:
    """(files, failures, notes): `scan_inputs` with missing inputs and empty directories as failures, and what
    was skipped on purpose (FIFOs, devices, second names of a file, link loops) as notes."""
    found = scan_inputs(inputs)
    failures = [FileIssue(p, f"{display(p)!r}: {why}") for p, why in found.missing]
    failures += [FileIssue(p, f"{display(p)!r}: directory holds no video files ({', '.join(sorted(VIDEO_SUFFIXES))})")
                 for p in found.empty_dirs]
    notes = [FileIssue(p, f"{display(p)!r}: skipped: {why}") for p, why in found.skipped]
    return found.paths, failures, notes


def expand_paths(inputs: Sequence[str | os.PathLike]) -> tuple[list[str], list[FileIssue]]:
    """(files, problems): `scan_report`'s failures and notes together."""
    paths, failures, notes = scan_report(inputs)
    return paths, failures + notes


def encode_clips(model: VideoCoCa, clips: Sequence[Clip], *, pooling: Pooling = "attentional",
                 return_tokens: bool = False, captions: GenerationConfig | None = None, prompt: str | None = None,
                 keep_frames: bool = False) -> list[EncodedClip]:
    """The model's part of batch encoding, for clips read with `model.preprocess`: 32 at a time (bounding the
    activations), with their generative tokens and/or captions (decoded as `captions` says, continuing `prompt`)
    when asked. The per-batch step that both the threaded path here and the Ray backend's model actors run.
    Frames are released unless `keep_frames`."""
    done: list[EncodedClip] = []
    for i in range(0, len(clips), 32):
        part = clips[i : i + 32]
        emb, video_tokens = model.encode_video(torch.stack([c.frames for c in part]), pooling=pooling,
                                               return_tokens=True)  # (b, E), (b, Q-1, E)
        texts = (model.generate(video_tokens=video_tokens, config=captions, prompt=prompt) if captions is not None
                 else [None] * len(part))
        for j, c in enumerate(part):
            clip = c if keep_frames else dataclasses.replace(c, frames=torch.empty(0))
            done.append(EncodedClip(clip, emb[j], video_tokens[j] if return_tokens else None, texts[j]))
    return done


@renamed_keywords(frames="num_frames")
def encode_videos(
    model: VideoCoCa,
    paths: Sequence[str | os.PathLike],
    *,
    num_frames: int = 8,
    batch_size: int = 4,
    workers: int = 2,
    pooling: Pooling = "attentional",
    segment: float | None = None,
    return_tokens: bool = False,
    captions: GenerationConfig | None = None,
    prompt: str | None = None,
    keep_frames: bool = False,
    progress: bool = False,
    desc: str = "encode",
    sampling: Sampling = "uniform",
) -> Iterator[EncodedClip | FileIssue]:
    """Read and encode each path (one result per file, or per window with `segment`), in input order.

    A file's windows arrive in order and together; a file that fails part-way ends with a FileIssue for
    its path after some of its windows (drop those). Frames are released once encoded (`keep_frames`
    keeps them), so holding results costs only their embeddings. With `captions` (how to decode), each
    result carries its caption (continuing `prompt`, if given), decoded batch by batch right after encoding.
    `sampling` as in `read_video` (`keyframes`: each result's `clip.timestamps` are the keyframes used).
    """
    loader = VideoLoader(paths, num_frames, batch_size, workers, preprocess=model.preprocess, segment=segment,
                         sampling=sampling)
    last = None
    with tqdm(total=len(loader.paths), desc=desc, unit="video", disable=not progress, leave=False) as bar:
        for batch in loader:
            clips = batch.clips
            encoded = encode_clips(model, clips, pooling=pooling, return_tokens=return_tokens, captions=captions,
                                   prompt=prompt, keep_frames=keep_frames)
            done = {id(c): e for c, e in zip(clips, encoded)}
            for item in batch.items:
                if item.path != last:
                    bar.update(last is not None)
                    last = item.path
                yield item if isinstance(item, FileIssue) else done[id(item)]
        bar.update(last is not None)


@renamed_keywords(frames="num_frames")
def encode_files(model: VideoCoCa, paths: Sequence[str | os.PathLike], **kwargs) -> Iterator[list[EncodedClip] | FileIssue]:
    """`encode_videos` grouped by file: each readable file's windows as one list (one item without `segment`),
    in input order, or a FileIssue. A file that fails part-way gives only its FileIssue; a file cut short by
    Ctrl-C is never yielded. What the index commits and what `embed` writes is therefore always whole files."""
    current: list[EncodedClip] = []
    whole = not kwargs.get("segment")  # one result per file: each is complete as it comes
    for item in encode_videos(model, paths, **kwargs):
        if whole:
            yield item if isinstance(item, FileIssue) else [item]
            continue
        if isinstance(item, FileIssue):
            if current and current[0].clip.path == item.path:
                current = []  # its windows so far are not a whole file
            yield item
            continue
        if current and item.clip.path != current[0].clip.path:
            yield current
            current = []
        current.append(item)
    if current:
        yield current
