"""Where derived artefacts (text embeddings, generated benchmarks, demo videos) are cached."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$VIDEOCOCA_CACHE, else ~/.cache/videococa."""
    return Path(os.environ.get("VIDEOCOCA_CACHE") or Path.home() / ".cache" / "videococa")
