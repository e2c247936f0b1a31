"""Tasks that combine models and video: classification, retrieval, embedding export, batch encoding.

Names load on first use (videococa.lazy): `tasks.labels` is read by light code (the CLI's parser) without
pulling in torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {
    ".batch": ("EncodedClip", "encode_files", "encode_videos", "expand_paths", "scan_inputs", "scan_report"),
    ".classify": ("Prediction", "ZeroShotClassifier", "ensemble_text_embeddings"),
    ".embed": ("EmbedReport", "embed_to_parquet"),
    ".labels": ("LabelSet", "label_set_names", "load_labels", "load_templates"),
    ".retrieve": ("rank_texts",),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .batch import EncodedClip, encode_files, encode_videos, expand_paths, scan_inputs, scan_report
    from .classify import Prediction, ZeroShotClassifier, ensemble_text_embeddings
    from .embed import EmbedReport, embed_to_parquet
    from .labels import LabelSet, label_set_names, load_labels, load_templates
    from .retrieve import rank_texts

__all__ = [
    "EmbedReport", "EncodedClip", "LabelSet", "Prediction", "ZeroShotClassifier", "embed_to_parquet",
    "encode_files", "encode_videos", "ensemble_text_embeddings", "expand_paths", "label_set_names", "load_labels",
    "load_templates", "rank_texts", "scan_inputs", "scan_report",
]
