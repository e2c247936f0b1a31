"""Model loading and the VideoCoCa model over open_clip CoCa."""

from .loading import TINY_NAME, list_models, load_model, read_state_dict, resolve_device
from .videococa import MAX_FRAMES, POOLINGS, PRECISIONS, ModelInfo, VideoCoCa

__all__ = [
    "MAX_FRAMES",
    "POOLINGS",
    "PRECISIONS",
    "TINY_NAME",
    "ModelInfo",
    "VideoCoCa",
    "list_models",
    "load_model",
    "read_state_dict",
    "resolve_device",
]
