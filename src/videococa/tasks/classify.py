"""Zero-shot video classification with prompt-template ensembles (CLIP's recipe).

Each class embedding is the mean of the L2-normalised text embeddings of its prompts (one per
template), re-normalised (Radford et al. 2021, section 3.1.4). Class embeddings of a label set are
computed once per model and cached on disk, keyed by the model's weight fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..cache import cache_root
from ..files import load_tensors, save_tensors_atomic
from ..models.videococa import VideoCoCa
from .labels import LabelSet, load_labels, load_templates
from ..errors import OptionError


@dataclass(frozen=True)
class Prediction:
    """One class for one video."""

    label: str
    """Class name as the label set writes it."""
    score: float
    """Softmax probability over the label set (single-label) or cosine similarity (multi-label)."""
    index: int
    """Position of the class in the label set."""


def ensemble_text_embeddings(model: VideoCoCa, prompt_names: Sequence[str], templates: Sequence[str],
                             *, batch_size: int = 256) -> torch.Tensor:
    """(C, E) class embeddings: mean of normalised template embeddings per class, re-normalised."""
    texts = [t.format(name) for name in prompt_names for t in templates]
    embs = torch.cat([model.encode_text(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)])
    embs = F.normalize(embs.float(), dim=-1).view(len(prompt_names), len(templates), -1)  # (C, K, E)
    return F.normalize(embs.mean(1), dim=-1)  # (C, E)


class ZeroShotClassifier:
    """Classify videos into a label set by comparing video and prompt embeddings.

    `labels`: a bundled name (`kinetics400`, `ucf101`, ...), a label file, or a list of class names.
    `templates`: `clip` (the label set's CLIP templates), `kinetics`, `ucf101`, `single`, a file or a list.
    `multi_label`: report classes by cosine similarity, not a softmax (Charades-style sets).
    """

    def __init__(self, model: VideoCoCa, labels: str | os.PathLike | Sequence[str] | LabelSet,
                 templates: str | os.PathLike | Sequence[str] = "clip", *, multi_label: bool | None = None,
                 cache: bool = True):
        self.model = model
        self.labels = labels if isinstance(labels, LabelSet) else load_labels(labels)
        self.templates = load_templates(templates, self.labels)
        self.multi_label = self.labels.multi_label if multi_label is None else multi_label
        self.cache_path: Path | None = None
        self.class_embeddings = self._class_embeddings(cache)  # (C, E)

    def _class_embeddings(self, cache: bool) -> torch.Tensor:
        key = hashlib.sha256(json.dumps([self.model.fingerprint(), self.labels.prompt_names, self.templates]).encode())
        path = cache_root() / "text" / f"{self.model.info.name}-{key.hexdigest()[:20]}.safetensors"
        if cache and path.is_file():
            try:
                emb = load_tensors(path)[0]["class_embeddings"]
                if emb.shape == (len(self.labels), self.model.info.embed_dim):
                    self.cache_path = path
                    return emb.to(self.model.device)
            except Exception:  # noqa: BLE001 - a damaged cache file is recomputed, never fatal
                pass
        emb = ensemble_text_embeddings(self.model, self.labels.prompt_names, self.templates)
        if cache:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                save_tensors_atomic(path, {"class_embeddings": emb},
                                    metadata={"model": self.model.info.name, "labels": self.labels.name,
                                              "templates": str(len(self.templates))})
                self.cache_path = path
            except OSError:
                pass  # an unwritable cache only costs recomputation
        return emb

    def scores(self, video_embeddings: torch.Tensor) -> torch.Tensor:
        """(B, C): softmax probabilities (single-label) or cosine similarities (multi-label)."""
        sim = F.normalize(video_embeddings.float(), dim=-1) @ self.class_embeddings.float().T  # (B, C)
        return sim if self.multi_label else (self.model.logit_scale * sim).softmax(-1)

    def classify(self, video_embeddings: torch.Tensor, *, top_k: int = 5) -> list[list[Prediction]]:
        """Top-k predictions per video, best first."""
        if top_k < 1:
            raise OptionError(f"top_k must be at least 1, got {top_k}")
        s = self.scores(video_embeddings)
        vals, idx = s.topk(min(top_k, s.shape[1]), dim=-1)
        return [[Prediction(self.labels.labels[i], float(v), int(i)) for v, i in zip(vr.tolist(), ir.tolist())]
                for vr, ir in zip(vals, idx)]

    def __call__(self, frames: torch.Tensor, *, top_k: int = 5, pooling: str = "attentional") -> list[list[Prediction]]:
        """Classify (B, T, 3, S, S) frames."""
        return self.classify(self.model.encode_video(frames, pooling=pooling), top_k=top_k)
