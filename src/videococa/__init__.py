"""videococa: zero-shot video-text models from image-text CoCa checkpoints (VideoCoCa, Yan et al. 2022)."""

from .errors import (AnnotationError, CheckpointError, DatasetRequestError, FeatureCacheError, FinetuneError,
                     IndexStoreError, LabelSetError, ModelNotFoundError, OptionError, VideoCoCaError, VideoDecodeError,
                     WeightsUnavailableError)
from .index import RepairReport, SearchHit, UpdateReport, VideoIndex
from .models import ModelInfo, VideoCoCa, list_models, load_model
from .models.decoding import Caption, GenerationConfig
from .tasks import (EmbedReport, EncodedClip, Prediction, ZeroShotClassifier, embed_to_parquet, encode_videos,
                    load_labels, rank_texts)
from .version import __version__
from .video import (Clip, FileIssue, LoadError, Preprocess, VideoBatch, VideoInfo, VideoLoader, iter_clips, preprocess_frames,
                    probe, read_clips, read_video)

__all__ = [
    # models
    "Caption", "GenerationConfig", "ModelInfo", "VideoCoCa", "list_models", "load_model",
    # video
    "Clip", "FileIssue", "LoadError", "Preprocess", "VideoBatch", "VideoInfo", "VideoLoader", "iter_clips", "preprocess_frames", "probe",
    "read_clips", "read_video",
    # tasks
    "EmbedReport", "EncodedClip", "Prediction", "ZeroShotClassifier", "embed_to_parquet", "encode_videos",
    "load_labels", "rank_texts",
    # index
    "RepairReport", "SearchHit", "UpdateReport", "VideoIndex",
    # errors (every error a user can cause is a VideoCoCaError)
    "AnnotationError", "CheckpointError", "DatasetRequestError", "FeatureCacheError", "FinetuneError",
    "IndexStoreError", "LabelSetError", "ModelNotFoundError", "OptionError", "VideoCoCaError", "VideoDecodeError",
    "WeightsUnavailableError",
    "__version__",
]
