"""The synthetic video benchmark: real mp4 files plus an annotation file, generated once and cached."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import av

from ..cache import cache_root
from ..deprecation import renamed_keywords
from ..files import write_json_atomic
from .world import CLASS_NAMES, QA_TEMPLATE, VideoItem, video_spec

DEFAULT_SEED = 2022
FORMAT_VERSION = 1


def write_mp4(path: str | os.PathLike, frames, fps: int = 8) -> None:
    """Encode RGB uint8 frames as an h264 mp4 (written to a temp name, then renamed)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.part")  # not a video suffix: never picked up as a video
    h, w = frames[0].shape[:2]
    with av.open(str(tmp), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "16", "preset": "fast"}
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.replace(path)


@renamed_keywords(frames="num_frames")
def make_benchmark(
    root: str | os.PathLike | None = None,
    *,
    num_videos: int = 500,
    seed: int = DEFAULT_SEED,
    num_frames: int = 16,
    size: int = 128,
    late_share: float = 0.2,
) -> Path:
    """Write (or reuse) `num_videos` synthetic videos and `annotations.json`; returns the folder.

    Videos already written are kept, so an interrupted generation resumes. The annotation
    file is written last (atomically) and records how the set was made.
    """
    root = Path(root) if root is not None else cache_root() / f"synthetic-v{FORMAT_VERSION}-n{num_videos}-s{seed}"
    ann_path = root / "annotations.json"
    # the recorded key stays "frames": a benchmark written before the rename is reused as it is
    params = dict(version=FORMAT_VERSION, num_videos=num_videos, seed=seed, frames=num_frames, size=size,
                  late_share=late_share, fps=8)
    if ann_path.exists():
        existing = json.loads(ann_path.read_text())
        if existing.get("params") == params:
            return root
    (root / "videos").mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(num_videos):
        spec = video_spec(seed * 100_003 + i, late_share=late_share)
        rel = f"videos/{i:04d}.mp4"
        if not (root / rel).exists():
            write_mp4(root / rel, spec.render_frames(num_frames, size))
        items.append(VideoItem(rel, spec.label, spec.captions(), spec.questions(), spec.appears_at > 0))
    doc = {
        "params": params,
        "classes": list(CLASS_NAMES),
        "qa_template": QA_TEMPLATE,
        "items": [asdict(x) for x in items],
    }
    write_json_atomic(ann_path, doc, indent=1)
    return root


def load_benchmark(root: str | os.PathLike) -> tuple[list[VideoItem], dict]:
    """Items (with absolute video paths) and the whole annotation document."""
    root = Path(root)
    doc = json.loads((root / "annotations.json").read_text())
    items = []
    for d in doc["items"]:
        d = dict(d)
        d["path"] = str(root / d["path"])
        d["questions"] = [tuple(q) for q in d["questions"]]
        items.append(VideoItem(**d))
    return items, doc
