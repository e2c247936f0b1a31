"""videococa: zero-shot video-text models from image-text CoCa checkpoints (VideoCoCa, Yan et al. 2022).

The public names load on first use (PEP 562), so `import videococa` and the CLI's `--help` do not pay for torch,
open_clip and PyAV until a model, a video or an index is touched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import (AnnotationError, CheckpointError, DatasetRequestError, FeatureCacheError, FinetuneError,
                     IndexStoreError, LabelSetError, ModelNotFoundError, OptionError, VideoCoCaError, VideoDecodeError,
                     WeightsUnavailableError)
from .lazy import lazy_exports
from .version import __version__

_LAZY = {
    ".index": ("RepairReport", "SearchHit", "UpdateReport", "VideoIndex"),
    ".models": ("ModelInfo", "VideoCoCa", "list_models", "load_model"),
    ".models.decoding": ("Caption", "GenerationConfig"),
    ".tasks": ("EmbedReport", "EncodedClip", "Prediction", "ZeroShotClassifier", "embed_to_parquet", "encode_videos",
               "load_labels", "rank_texts"),
    ".video": ("Clip", "FileIssue", "LoadError", "Preprocess", "VideoBatch", "VideoInfo", "VideoLoader", "iter_clips",
               "preprocess_frames", "probe", "read_clips", "read_video"),
}

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports on first use
    from .index import RepairReport, SearchHit, UpdateReport, VideoIndex
    from .models import ModelInfo, VideoCoCa, list_models, load_model
    from .models.decoding import Caption, GenerationConfig
    from .tasks import (EmbedReport, EncodedClip, Prediction, ZeroShotClassifier, embed_to_parquet, encode_videos,
                        load_labels, rank_texts)
    from .video import (Clip, FileIssue, LoadError, Preprocess, VideoBatch, VideoInfo, VideoLoader, iter_clips,
                        preprocess_frames, probe, read_clips, read_video)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


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
