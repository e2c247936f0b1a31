"""Exceptions a user can cause: each message names the input and the problem in plain words."""

from __future__ import annotations


class VideoCoCaError(Exception):
    """Base class of every error videococa raises for bad input."""


class ModelNotFoundError(VideoCoCaError, ValueError):
    """A model name or pretrained tag that videococa does not know."""


class CheckpointError(VideoCoCaError):
    """A weights file that cannot be read or does not fit the model."""


class WeightsUnavailableError(VideoCoCaError):
    """Pretrained weights that are neither cached locally nor downloadable right now."""


class VideoDecodeError(VideoCoCaError):
    """A video (or image) file that cannot be read."""


class LabelSetError(VideoCoCaError):
    """A label-set name, label file or template file that cannot be used."""


class IndexStoreError(VideoCoCaError):
    """A video index that is missing, unwritable, corrupt or made with another model."""


class AnnotationError(VideoCoCaError):
    """An annotation file that is missing or not in the expected format."""


class DatasetRequestError(AnnotationError):
    """A dataset, task, split or set of annotation files that do not go together."""


class FeatureCacheError(VideoCoCaError):
    """A feature cache that is missing, damaged or made with another model or frame count."""


class FinetuneError(VideoCoCaError):
    """A finetuning run that cannot start or resume as asked, or a run directory that cannot be applied."""


class BackendError(VideoCoCaError):
    """A batch backend that cannot run as asked: Ray not installed, a cluster that cannot be reached, an output
    folder holding another job's shards."""


class OptionError(VideoCoCaError, ValueError):
    """An option value a user gave that cannot be used (a mode that does not exist, a number out of range).

    A ValueError too, so code that catches ValueError keeps working."""


def check_choice(value: str, allowed, what: str) -> str:
    """Return `value` if it is one of `allowed`, else raise an OptionError listing them."""
    if value not in allowed:
        raise OptionError(f"unknown {what} {value!r}; choose one of: {', '.join(allowed)}")
    return value
