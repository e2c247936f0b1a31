"""Video input: decoding (PyAV), frame sampling, preprocessing and batched loading."""

from .decode import VideoInfo, decode_all, decode_frames_at, probe
from .loader import FileIssue, LoadError, VideoBatch, VideoLoader
from .reader import Clip, iter_clips, read_clips, read_video
from .sampling import clip_windows, random_times, sliding_windows, uniform_times
from .transforms import CLIP_MEAN, CLIP_STD, Preprocess, preprocess_frames, resize_crop

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "Clip",
    "FileIssue", "LoadError",
    "Preprocess",
    "VideoBatch",
    "VideoInfo",
    "VideoLoader",
    "clip_windows",
    "decode_all",
    "decode_frames_at",
    "preprocess_frames",
    "probe",
    "random_times",
    "iter_clips",
    "read_clips",
    "read_video",
    "resize_crop",
    "sliding_windows",
    "uniform_times",
]
