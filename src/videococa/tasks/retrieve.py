"""Video -> text ranking (the index does text -> video and video -> video)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..models.videococa import VideoCoCa
from ..errors import OptionError


def rank_texts(model: VideoCoCa, video_embedding: torch.Tensor, texts: Sequence[str]) -> list[tuple[str, float]]:
    """Texts ranked by cosine similarity to one (E,) video embedding, best first, as (text, score)."""
    if not texts:
        raise OptionError("rank_texts needs at least one text")
    if any(not t.strip() for t in texts):
        raise OptionError("rank_texts: a text is empty")
    sims = model.encode_text(list(texts)).float() @ F.normalize(video_embedding.float().reshape(-1), dim=0)  # (N,)
    order = sims.argsort(descending=True).tolist()
    return [(texts[i], float(sims[i])) for i in order]
