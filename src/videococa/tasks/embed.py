"""Embeddings of many videos into a Parquet file (one row per video or segment).

Rows are written in row groups as they are computed, to a temp file next to OUT, renamed to OUT
when the run ends, also when it is interrupted with Ctrl-C (the rows done so far are kept).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..files import atomic_path
from ..models.videococa import Pooling, VideoCoCa
from ..video.loader import LoadError
from .batch import encode_videos


@dataclass
class EmbedReport:
    """What an embed run wrote."""

    out: str
    """The Parquet file."""
    rows: int = 0
    """Rows written (videos or segments)."""
    videos: int = 0
    """Videos embedded."""
    failed: list[LoadError] = field(default_factory=list)
    """Videos that could not be read, with reasons."""
    interrupted: bool = False
    """The run was stopped early; the file holds the rows done until then."""


def embed_to_parquet(model: VideoCoCa, paths: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                     frames: int = 8, pooling: Pooling = "attentional", segment: float | None = None,
                     batch_size: int = 4, workers: int = 2, row_group: int = 256,
                     progress: bool = False) -> EmbedReport:
    """Embed each video (or each `segment`-second window) and write one Parquet row per embedding.

    Columns: path, start, end, duration, width, height, fps, embedding (fixed-size list of float32),
    plus the protocol as file-level metadata (model, pretrained, weights fingerprint, frames, pooling).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    import videococa

    out = Path(out)
    if out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a directory; give a file name such as embeddings.parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    dim = model.info.embed_dim
    meta = {"videococa": videococa.__version__, "model": model.info.name, "pretrained": model.info.pretrained or "",
            "precision": model.precision, "fingerprint": model.fingerprint(), "frames": str(frames),
            "sampling": "uniform", "pooling": pooling, "segment": str(segment or 0)}
    schema = pa.schema([
        ("path", pa.string()), ("start", pa.float64()), ("end", pa.float64()), ("duration", pa.float64()),
        ("width", pa.int32()), ("height", pa.int32()), ("fps", pa.float64()),
        ("embedding", pa.list_(pa.float32(), dim)),
    ], metadata={f"videococa.{k}": v for k, v in meta.items()})
    report = EmbedReport(str(out))
    rows: list[tuple] = []
    seen: set[str] = set()

    def flush(writer) -> None:
        if rows:
            cols = list(zip(*rows))
            emb = np.stack(cols[7]).astype(np.float32)  # (R, E)
            arrays = [pa.array(c, type=t) for c, t in zip(cols[:7], schema.types[:7])]
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), dim))
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            report.rows += len(rows)
            rows.clear()

    with atomic_path(out) as tmp, pq.ParquetWriter(str(tmp), schema) as writer:  # renamed once the writer closes
        try:
            for item in encode_videos(model, paths, frames=frames, batch_size=batch_size, workers=workers,
                                      pooling=pooling, segment=segment, progress=progress, desc="embed"):
                if isinstance(item, LoadError):
                    report.failed.append(item)
                    continue
                c = item.clip
                seen.add(c.path)
                rows.append((c.path, c.start, c.end, c.info.duration, c.info.width, c.info.height, c.info.fps,
                             item.embedding.float().cpu().numpy()))
                if len(rows) >= row_group:
                    flush(writer)
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            flush(writer)
    report.videos = len(seen)
    return report
