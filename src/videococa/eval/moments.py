"""Zero-shot moment retrieval (Charades-STA): which part of a video does a sentence describe?

How a span is predicted, with no training (sliding windows, scored by contrast):
1. each video is cut into short unit windows (`sliding_windows`: 1/8 of the video long, stepping by half
   that), each read as its own clip (`read_clips(..., windows=...)`, T uniform frames) and encoded like a
   video, so a unit's embedding is exactly what `encode_video` gives for that stretch;
2. every query sentence is scored against its video's units by cosine similarity;
3. the candidate spans are windows at several scales (1/8, 1/4, 3/8 and 1/2 of the video, each stepping by
   half its length, plus one flush with the end); a candidate's score is the mean score of the units inside
   it (by their midpoints) minus the mean score of the units outside it. The contrast is what makes a span
   fit the moment: a window's own score only says that the thing is somewhere in it, so a long window that
   holds the moment scores as high as the moment itself, while units outside the true moment pull a too-long
   span's inside mean down and a too-short span leaves high units outside;
4. candidates are ranked by that score and temporal non-maximum suppression (IoU >= 0.5 with a better
   candidate drops one) gives the top-5 distinct spans: the best is the R@1 prediction, the five the R@5 ones.
Metrics (`metrics.moment_metrics`): R@1 and R@5 at IoU 0.5 and 0.7, and mIoU of the top span.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..data.readers import Item
from ..deprecation import renamed_keywords
from ..errors import VideoCoCaError
from ..models.videococa import VideoCoCa
from ..video.reader import read_clips
from ..video.sampling import sliding_windows
from . import metrics as M

MOMENT_UNIT = 0.125
"""Length of the encoded unit windows, as a share of the video."""
MOMENT_SCALES: tuple[float, ...] = (0.125, 0.25, 0.375, 0.5)
"""Candidate span lengths as shares of the video."""
MOMENT_STRIDE = 0.5
"""Step between windows as a share of their length."""
MOMENT_NMS = 0.5
"""Temporal NMS IoU threshold for the ranked spans."""


@renamed_keywords(frames="num_frames")
def rank_moments(model: VideoCoCa, items: Sequence[Item], *, num_frames: int = 8, pooling: str = "attentional",
                 unit: float = MOMENT_UNIT, scales: Sequence[float] = MOMENT_SCALES, stride: float = MOMENT_STRIDE,
                 nms: float = MOMENT_NMS,
                 top_k: int = 5, batch_size: int = 8, progress: bool = False,
                 ) -> tuple[list[list[tuple[float, float]] | None], list[tuple[str, str]], int]:
    """(ranked spans per item, or None where its video is unreadable; unreadable (path, reason); units encoded).

    Items are queries: `captions[0]` is the sentence, `path` the video (see the module docstring).
    """
    by_video: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        by_video[it.path].append(i)
    ranked: list[list[tuple[float, float]] | None] = [None] * len(items)
    unreadable: list[tuple[str, str]] = []
    windows_scored = 0
    for path, idx in tqdm(by_video.items(), desc="moments", unit="video", disable=not progress, leave=False):
        try:
            clips = read_clips(path, num_frames, windows=lambda d: sliding_windows(d, scales=(unit,), stride=stride),
                               preprocess=model.preprocess)
        except (VideoCoCaError, ValueError) as exc:
            unreadable.append((path, str(exc)))
            continue
        duration = clips[-1].end
        spans = sliding_windows(duration, scales=scales, stride=stride)
        mids = np.array([(c.start + c.end) / 2 for c in clips])
        inside = np.array([(mids >= a) & (mids <= b) for a, b in spans], dtype=np.float64)  # (C, U)
        outside = 1.0 - inside
        emb = torch.cat([model.encode_video(torch.stack([c.frames for c in clips[k : k + batch_size]]),
                                            pooling=pooling)  # (b, T, 3, H, W) -> (b, E)
                         for k in range(0, len(clips), batch_size)]).float()
        text = model.encode_text([items[i].captions[0] for i in idx]).float()  # (Q, E)
        units = (text @ emb.T).double().numpy()  # (Q, U)
        mean_in = units @ inside.T / np.maximum(inside.sum(1), 1)  # (Q, C)
        mean_out = np.where(outside.sum(1) > 0, units @ outside.T / np.maximum(outside.sum(1), 1), 0.0)
        windows_scored += len(clips)
        for i, row in zip(idx, (mean_in - mean_out).tolist()):
            ranked[i] = [spans[j] for j in M.temporal_nms(spans, row, threshold=nms, top_k=top_k)]
    return ranked, unreadable, windows_scored
