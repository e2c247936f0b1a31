"""videococa: zero-shot video-text models from image-text CoCa checkpoints (VideoCoCa, Yan et al. 2022)."""

from .errors import (CheckpointError, IndexStoreError, LabelSetError, ModelNotFoundError, VideoCoCaError,
                     VideoDecodeError, WeightsUnavailableError)
from .index import SearchHit, UpdateReport, VideoIndex
from .models import ModelInfo, VideoCoCa, list_models, load_model
from .tasks import Prediction, ZeroShotClassifier, embed_to_parquet, encode_videos, load_labels, rank_texts
from .video import (Clip, LoadError, Preprocess, VideoBatch, VideoInfo, VideoLoader, preprocess_frames, probe,
                    read_clips, read_video)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "IndexStoreError",
    "LabelSetError",
    "Prediction",
    "SearchHit",
    "UpdateReport",
    "VideoIndex",
    "ZeroShotClassifier",
    "embed_to_parquet",
    "encode_videos",
    "load_labels",
    "rank_texts",
    "Clip",
    "LoadError",
    "Preprocess",
    "VideoBatch",
    "VideoInfo",
    "VideoLoader",
    "preprocess_frames",
    "probe",
    "read_clips",
    "read_video",
    "ModelInfo",
    "ModelNotFoundError",
    "VideoCoCa",
    "VideoCoCaError",
    "VideoDecodeError",
    "WeightsUnavailableError",
    "list_models",
    "load_model",
]
