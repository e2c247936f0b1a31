"""Readers for benchmark annotation formats."""

from .readers import (AnnotationError, Dataset, Item, VideoFinder, read_activitynet_captions, read_activitynet_qa,
                      read_charades, read_hmdb51, read_ivqa, read_kinetics, read_msrvtt, read_msrvtt_1ka,
                      read_msrvtt_qa, read_msvd, read_msvd_qa, read_qa_json, read_ucf101, read_vatex, read_youcook2)

__all__ = ["AnnotationError", "Dataset", "Item", "VideoFinder", "read_activitynet_captions", "read_activitynet_qa",
           "read_charades", "read_hmdb51", "read_ivqa", "read_kinetics", "read_msrvtt", "read_msrvtt_1ka",
           "read_msrvtt_qa", "read_msvd", "read_msvd_qa", "read_qa_json", "read_ucf101", "read_vatex", "read_youcook2"]
