"""File endings of the media videococa reads (a ground-floor module: light code such as the annotation readers
uses them without loading the decoder)."""

from __future__ import annotations

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
"""Still images, read as 1-frame videos."""
VIDEO_SUFFIXES = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts", ".3gp", ".ogv",
    ".gif",
})
"""File endings treated as videos when a directory is searched (batch commands, the index, benchmark readers)."""
