"""Encode many (path, start, end) clips: the items of an annotation file, as `eval` and `cache-features` read them.

Two steps per clip, the same wherever they run:
    read_clip_key(key, num_frames, preprocess)   the clip's frames (T, 3, S, S), or the reason it cannot be read
    encode_read(model, positions, got, ...)      one model call over a batch of read clips -> a KeyedBatch

`encode_clip_keys` runs them here: reading threads, the model in the calling thread. A backend runs the same
two steps elsewhere behind the same signature (`videococa.backends`: the Ray backend's `encode_clip_keys`
reads in CPU tasks and encodes in model actors). Callers that encode items take such a function as `encode=`
(`train.cache_features`, `eval.runner.evaluate`; default: `encode_clip_keys`): they sit below the backends in
the package's layering and so never import them; the CLI picks the backend and passes its function in, as
`VideoIndex.update(encode=backend.encode_files)` does for whole files. Only scheduling differs, so the
results (and the reasons given for unreadable clips) are the same whichever function ran them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal, Sequence

import torch
from tqdm import tqdm

from ..errors import OptionError, VideoCoCaError
from ..models.videococa import Pooling, VideoCoCa
from ..video.loader import reading_thread_init
from ..video.reader import read_video
from ..video.transforms import Preprocess

ClipKey = tuple[str, float | None, float | None]
"""(path, start, end) of a clip, in seconds; None: from the file's start / to its end."""
ClipOutput = Literal["video", "frames"]
"""What a model call returns per clip: `video` its embedding (and generative tokens, when asked); `frames` the
frozen encoder's per-frame tokens (what finetuning caches)."""
CLIP_OUTPUTS: tuple[str, ...] = ("video", "frames")


@dataclass
class KeyedBatch:
    """One model call's results over some clips of a run; positions index the run's list of clip keys."""

    ix: list[int]
    """Positions of the clips encoded by this call."""
    embeddings: torch.Tensor | None = None
    """(b, E) float32 L2-normalised video embeddings (output `video`)."""
    video_tokens: torch.Tensor | None = None
    """(b, Q-1, E) generative tokens (output `video` with `return_tokens`)."""
    frame_tokens: torch.Tensor | None = None
    """(b, T, N, W) fp16 frozen encoder tokens (output `frames`)."""
    failed: list[tuple[int, str]] = field(default_factory=list)
    """(position, reason) of the clips of this batch that could not be read."""


ClipKeyEncoder = Callable[..., Iterator[KeyedBatch]]
"""`encode_clip_keys`' signature: (model, keys, *, num_frames, output, pooling, return_tokens, batch_size,
workers, progress) -> each batch's KeyedBatch, every position once (encoded or failed)."""


def check_output(output: str) -> str:
    """`output` if it is a ClipOutput, else an OptionError listing them."""
    if output not in CLIP_OUTPUTS:
        raise OptionError(f"unknown clip output {output!r}; choose one of: {', '.join(CLIP_OUTPUTS)}")
    return output


def read_clip_key(key: ClipKey, num_frames: int, preprocess: Preprocess) -> torch.Tensor | str:
    """(T, 3, S, S) frames of the clip `key` as `preprocess` makes them, or why it cannot be read (the error's text)."""
    path, start, end = key
    try:
        return read_video(path, num_frames, start=start, end=end, preprocess=preprocess).frames
    except (VideoCoCaError, ValueError) as exc:
        return str(exc)


def encode_read(model: VideoCoCa, positions: Sequence[int], got: Sequence[torch.Tensor | str], *,
                output: ClipOutput = "video", pooling: Pooling = "attentional",
                return_tokens: bool = False) -> KeyedBatch:
    """The model's part: the clips of `got` that were read (frames as read with `model.preprocess`) in one call;
    the others (reasons) as failed. Results are on the CPU."""
    ok = [k for k, g in enumerate(got) if isinstance(g, torch.Tensor)]
    out = KeyedBatch([positions[k] for k in ok], failed=[(positions[k], g) for k, g in enumerate(got)
                                                          if not isinstance(g, torch.Tensor)])
    if not ok:
        return out
    frames = torch.stack([got[k] for k in ok])  # (b, T, 3, S, S)
    if output == "frames":
        out.frame_tokens = model.encode_frames(frames).to(torch.float16).cpu()  # (b, T, N, W)
        return out
    enc = model.encode_video(frames, pooling=pooling, return_tokens=return_tokens)
    emb, video_tokens = enc if return_tokens else (enc, None)  # (b, E), (b, Q-1, E)
    out.embeddings = emb.float().cpu()
    out.video_tokens = None if video_tokens is None else video_tokens.cpu()
    return out


def encode_clip_keys(model: VideoCoCa, keys: Sequence[ClipKey], *, num_frames: int = 8, output: ClipOutput = "video",
                     pooling: Pooling = "attentional", return_tokens: bool = False, batch_size: int = 8,
                     workers: int = 2, progress: bool = False) -> Iterator[KeyedBatch]:
    """Read (in `workers` threads; 0: in this thread) and encode the clips `keys`, `batch_size` per model call,
    in order: one KeyedBatch per call."""
    check_output(output)

    def read(key: ClipKey) -> torch.Tensor | str:
        return read_clip_key(key, num_frames, model.preprocess)

    with ThreadPoolExecutor(max(1, workers), initializer=reading_thread_init) as pool, tqdm(total=len(keys), desc="encode", unit="clip",
                                                         disable=not progress, leave=False) as bar:
        for start in range(0, len(keys), batch_size):
            part = keys[start : start + batch_size]
            got = list(pool.map(read, part)) if workers else [read(k) for k in part]
            yield encode_read(model, range(start, start + len(part)), got, output=output, pooling=pooling,
                              return_tokens=return_tokens)
            bar.update(len(part))
