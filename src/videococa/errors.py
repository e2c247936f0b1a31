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
