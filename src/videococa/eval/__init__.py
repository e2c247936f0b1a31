"""Metrics and the evaluation runner."""

from .metrics import (bleu, caption_metrics, charades_map, cider_d, qa_accuracy, recall_metrics, retrieval_ranks,
                      rouge_l, tokenize, topk_accuracy)

__all__ = ["bleu", "caption_metrics", "charades_map", "cider_d", "qa_accuracy", "recall_metrics", "retrieval_ranks",
           "rouge_l", "tokenize", "topk_accuracy"]
