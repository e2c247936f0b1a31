"""Embeddings of many videos into a Parquet file (one row per video or segment).

Rows are written in row groups as they are computed, to a temp file next to OUT, renamed to OUT when
the run is complete. An interrupted run never touches OUT: its finished videos go to OUT.partial,
from which the next run with the same settings resumes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..files import remove_stale_parts
from ..paths import display
from ..models.videococa import Pooling, VideoCoCa
from ..video.loader import LoadError
from .batch import encode_videos
from ..errors import OptionError


@dataclass
class EmbedReport:
    """What an embed run wrote."""

    out: str
    """The Parquet file."""
    rows: int = 0
    """Rows written (videos or segments), those resumed included."""
    videos: int = 0
    """Videos embedded, those resumed included."""
    failed: list[LoadError] = field(default_factory=list)
    """Videos that could not be read, with reasons."""
    interrupted: bool = False
    """The run was stopped early: `out` is untouched and the rows done are in `partial`."""
    partial: str = ""
    """Where an interrupted run keeps its rows (`OUT.partial`); the next run with the same settings resumes from it."""
    resumed: int = 0
    """Videos taken over from an interrupted earlier run instead of being embedded again."""
    notes: list[LoadError] = field(default_factory=list)
    """Things worth knowing: a partial file that could not be resumed, stale temp files removed."""


def _clean_stale_parts(out: Path, report: EmbedReport) -> None:
    """Remove temp files (OUT.<pid>.part) left by runs that were killed (their process is gone)."""
    for part in remove_stale_parts(out):
        report.notes.append(LoadError(str(part), f"{display(part)!r}: removed: left by a run that was killed"))


def _unchanged_since(path: str, written_ns: int) -> bool:
    try:
        return os.stat(path).st_mtime_ns <= written_ns
    except OSError:
        return False


def _resumable(partial: Path, schema, wanted: set[str], report: EmbedReport):
    """The rows of an interrupted earlier run with the same settings, or None (a note says why not).

    Only rows of videos asked for now, and not modified since the partial file was written, are kept.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not partial.is_file():
        return None
    try:
        table = pq.read_table(partial)
    except Exception as exc:  # noqa: BLE001 - unreadable for any reason: start over
        reason = f"cannot be read ({type(exc).__name__}); starting over"
    else:
        if table.schema.metadata == schema.metadata and table.schema.names == schema.names:
            written = partial.stat().st_mtime_ns
            keep = [_unchanged_since(os.fsdecode(b), written) and os.fsdecode(b) in wanted
                    for b in table.column("path_bytes").to_pylist()]
            return table.filter(pa.array(keep, type=pa.bool_())).cast(schema)  # Parquet renames the list's child
        reason = "was made with other settings or another videococa; starting over"
    report.notes.append(LoadError(str(partial), f"{display(partial)!r}: {reason}"))
    return None


def embed_to_parquet(model: VideoCoCa, paths: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                     frames: int = 8, pooling: Pooling = "attentional", segment: float | None = None,
                     batch_size: int = 4, workers: int = 2, row_group: int = 256,
                     progress: bool = False) -> EmbedReport:
    """Embed each video (or each `segment`-second window) and write one Parquet row per embedding.

    Columns: path (text; bytes of a non-UTF-8 name as \\xNN escapes), path_bytes (the name's raw bytes),
    start, end, duration, width, height, fps, embedding (fixed-size list of float32), plus the protocol as
    file-level metadata (model, pretrained, weights fingerprint, frames, pooling, segment).

    OUT is replaced only by a complete run. An interrupted run (Ctrl-C) leaves OUT as it was and keeps
    the videos it finished in OUT.partial; running again with the same settings takes them over and embeds
    only the rest. A killed run's temp file (OUT.<pid>.part) is removed by the next run.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    if out.is_dir():
        raise OptionError(f"--out {display(out)!r} is a directory; give a file name such as embeddings.parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    dim = model.info.embed_dim
    meta = {k: str(v) for k, v in model.provenance(frames=frames, pooling=pooling, segment=segment or 0).items()}
    schema = pa.schema([
        ("path", pa.string()), ("path_bytes", pa.binary()), ("start", pa.float64()), ("end", pa.float64()),
        ("duration", pa.float64()), ("width", pa.int32()), ("height", pa.int32()), ("fps", pa.float64()),
        ("embedding", pa.list_(pa.float32(), dim)),
    ], metadata={f"videococa.{k}": v for k, v in meta.items()})
    partial = out.with_name(out.name + ".partial")
    report = EmbedReport(str(out), partial=str(partial))
    _clean_stale_parts(out, report)
    carried = _resumable(partial, schema, {os.fspath(p) for p in paths}, report)
    done_before = set() if carried is None else {os.fsdecode(b) for b in carried.column("path_bytes").to_pylist()}
    rows: list[tuple] = []  # rows of finished videos, not yet written
    current: list = []  # encoded windows of the video being read (written only once it is complete)
    current_path: str | None = None
    seen: set[str] = set(done_before)

    def flush(writer) -> None:
        if rows:
            cols = list(zip(*rows))
            emb = np.stack(cols[8]).astype(np.float32)  # (R, E)
            arrays = [pa.array(c, type=t) for c, t in zip(cols[:8], schema.types[:8])]
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), dim))
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            report.rows += len(rows)
            rows.clear()

    def finish(items: list) -> None:
        """The rows of one complete video; a cut-off file's rows all carry the duration its data really has."""
        cut = items[-1].clip.truncated_at  # found out only when its last windows were read
        for it in items:
            c = it.clip
            name = os.fsencode(c.path)
            rows.append((name.decode("utf-8", "backslashreplace"), name, c.start, c.end,
                         c.info.duration if cut is None else cut, c.info.width, c.info.height, c.info.fps,
                         it.embedding.float().cpu().numpy()))
        if cut is not None:
            path = items[-1].clip.path
            report.notes.append(LoadError(path, f"{display(path)!r}: truncated: its data ends at {cut:.2f} s of a "
                                                f"stated {items[-1].clip.info.duration:.2f} s; embedded up to there"))

    tmp = out.with_name(f"{out.name}.{os.getpid()}.part")
    try:
        with pq.ParquetWriter(str(tmp), schema) as writer:
            if carried is not None and carried.num_rows:
                writer.write_table(carried)
                report.rows, report.resumed = carried.num_rows, len(done_before)
            todo = [p for p in paths if os.fspath(p) not in done_before]
            try:
                for item in encode_videos(model, todo, frames=frames, batch_size=batch_size, workers=workers,
                                          pooling=pooling, segment=segment, progress=progress, desc="embed"):
                    if isinstance(item, LoadError):
                        report.failed.append(item)
                        if item.path == current_path:  # failed part-way: its windows so far are dropped
                            current, current_path = [], None
                        continue
                    if item.clip.path != current_path:  # the previous video is complete
                        if current:
                            finish(current)
                        current, current_path = [], item.clip.path
                        if len(rows) >= row_group:
                            flush(writer)
                    seen.add(item.clip.path)
                    current.append(item)
                    if segment is None:  # one row per video: complete at once
                        finish(current)
                        current = []
                if current:
                    finish(current)
            except KeyboardInterrupt:
                report.interrupted = True
                if current:
                    seen.discard(current_path)  # its windows were not all read: dropped
            flush(writer)
        if report.interrupted:
            if report.rows:
                os.replace(tmp, partial)
        else:
            os.replace(tmp, out)
            partial.unlink(missing_ok=True)
    finally:
        tmp.unlink(missing_ok=True)
    report.videos = len(seen)
    return report
