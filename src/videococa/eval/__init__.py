"""Metrics and the evaluation runner."""

from .metrics import (bleu, caption_metrics, charades_map, cider_d, moment_metrics, qa_accuracy, qa_scores,
                      recall_metrics, retrieval_ranks, rouge_l, temporal_iou, temporal_nms, tokenize, topk_accuracy,
                      vqa_normalize)

__all__ = ["bleu", "caption_metrics", "charades_map", "cider_d", "moment_metrics", "qa_accuracy", "qa_scores",
           "recall_metrics", "retrieval_ranks", "rouge_l", "temporal_iou", "temporal_nms", "tokenize", "topk_accuracy",
           "vqa_normalize"]
