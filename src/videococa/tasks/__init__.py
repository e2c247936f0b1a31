"""Tasks that combine models and video: classification, retrieval, embedding export, batch encoding."""

from .batch import EncodedClip, encode_files, encode_videos, expand_paths, scan_inputs, scan_report
from .classify import Prediction, ZeroShotClassifier, ensemble_text_embeddings
from .embed import EmbedReport, embed_to_parquet
from .labels import LabelSet, label_set_names, load_labels, load_templates
from .retrieve import rank_texts

__all__ = [
    "EmbedReport", "EncodedClip", "LabelSet", "Prediction", "ZeroShotClassifier", "embed_to_parquet",
    "encode_files", "encode_videos", "ensemble_text_embeddings", "expand_paths", "scan_inputs", "scan_report", "label_set_names", "load_labels",
    "load_templates", "rank_texts",
]
