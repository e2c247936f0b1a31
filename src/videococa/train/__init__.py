"""Feature cache and lightweight finetuning (poolers and decoder; the image encoder stays frozen)."""

from ..errors import FeatureCacheError, FinetuneError
from ..models.finetuned import apply_finetuned
from .features import CacheReport, FeatureCache, cache_features, clip_key
from .finetune import FinetuneConfig, finetune, training_pairs

__all__ = ["CacheReport", "FeatureCache", "FeatureCacheError", "FinetuneConfig", "FinetuneError", "apply_finetuned",
           "cache_features", "clip_key", "finetune", "training_pairs"]
