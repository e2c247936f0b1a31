"""Feature cache and lightweight finetuning (poolers and decoder; the image encoder stays frozen)."""

from .features import CacheReport, FeatureCache, FeatureCacheError, cache_features, clip_key
from .finetune import FinetuneConfig, FinetuneError, apply_finetuned, finetune, training_pairs

__all__ = ["CacheReport", "FeatureCache", "FeatureCacheError", "FinetuneConfig", "FinetuneError", "apply_finetuned",
           "cache_features", "clip_key", "finetune", "training_pairs"]
