"""Readers for benchmark annotation formats, and the registry of benchmarks that the commands read."""

from .readers import (AnnotationError, Dataset, Item, VideoFinder, read_activitynet_captions, read_activitynet_qa,
                      read_charades, read_charades_sta, read_hmdb51, read_ivqa, read_kinetics, read_msrvtt,
                      read_msrvtt_1ka, read_msrvtt_qa, read_msvd, read_msvd_qa, read_qa_json, read_ucf101, read_vatex,
                      read_youcook2)
from .registry import REGISTRY, DatasetRequestError, DatasetSpec, load_datasets

__all__ = ["AnnotationError", "Dataset", "DatasetRequestError", "DatasetSpec", "Item", "REGISTRY", "VideoFinder",
           "load_datasets", "read_activitynet_captions", "read_activitynet_qa", "read_charades", "read_charades_sta",
           "read_hmdb51", "read_ivqa", "read_kinetics", "read_msrvtt", "read_msrvtt_1ka", "read_msrvtt_qa", "read_msvd",
           "read_msvd_qa", "read_qa_json", "read_ucf101", "read_vatex", "read_youcook2"]
