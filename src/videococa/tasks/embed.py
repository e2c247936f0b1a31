"""Embeddings of many videos into a Parquet file (one row per video or segment).

Rows are written in row groups as they are computed, to a temp file next to OUT, renamed to OUT when
the run is complete. An interrupted run never touches OUT: its finished videos go to OUT.partial,
from which the next run with the same settings resumes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..deprecation import renamed_keywords
from ..files import remove_stale_parts
from ..paths import display
from ..models.decoding import GenerationConfig
from ..models.videococa import Pooling, VideoCoCa
from ..video.loader import FileIssue
from ..video.sampling import WINDOW_SAMPLINGS, Sampling, check_sampling
from .batch import encode_files
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
    failed: list[FileIssue] = field(default_factory=list)
    """Videos that could not be read, with reasons."""
    interrupted: bool = False
    """The run was stopped early: `out` is untouched and the rows done are in `partial`."""
    partial: str = ""
    """Where an interrupted run keeps its rows (`OUT.partial`); the next run with the same settings resumes from it."""
    resumed: int = 0
    """Videos taken over from an interrupted earlier run instead of being embedded again."""
    notes: list[FileIssue] = field(default_factory=list)
    """Things worth knowing: a partial file that could not be resumed, stale temp files removed."""


def _clean_stale_parts(out: Path, report: EmbedReport) -> None:
    """Remove temp files (OUT.<pid>.part) left by runs that were killed (their process is gone)."""
    for part in remove_stale_parts(out):
        report.notes.append(FileIssue(str(part), f"{display(part)!r}: removed: left by a run that was killed"))


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
    report.notes.append(FileIssue(str(partial), f"{display(partial)!r}: {reason}"))
    return None


def caption_setting(captions: GenerationConfig) -> str:
    """How captions were decoded, as embedding files record it (`videococa.captions`): the config as JSON."""
    return json.dumps(dataclasses.asdict(captions), sort_keys=True)


def embed_schema(model: VideoCoCa, num_frames: int, pooling: str, segment: float | None,
                 captions: GenerationConfig | None = None, sampling: Sampling = "uniform"):
    """The Arrow schema of an embedding file (and of each Parquet shard the Ray backend writes): columns, and the
    protocol as metadata; with `captions`, a `caption` column and the decoding recorded as `videococa.captions`;
    with `sampling` keyframes (recorded as `videococa.sampling`), a `frame_times` column: the times (s) of the
    keyframes that stood in for each row's samples."""
    import pyarrow as pa

    # the stored key stays "frames" (files written before the rename keep resuming)
    meta = {k: str(v) for k, v in model.provenance(frames=num_frames, pooling=pooling, segment=segment or 0,
                                                   sampling=check_sampling(sampling, WINDOW_SAMPLINGS)).items()}
    if captions is not None:
        meta["captions"] = caption_setting(captions)
    return pa.schema([
        ("path", pa.string()), ("path_bytes", pa.binary()), ("start", pa.float64()), ("end", pa.float64()),
        ("duration", pa.float64()), ("width", pa.int32()), ("height", pa.int32()), ("fps", pa.float64()),
        ("embedding", pa.list_(pa.float32(), model.info.embed_dim)),
        *([("caption", pa.string())] if captions is not None else []),
        *([("frame_times", pa.list_(pa.float64()))] if sampling == "keyframes" else []),
    ], metadata={f"videococa.{k}": v for k, v in meta.items()})


def file_rows(items: list, notes: list[FileIssue]) -> list[tuple]:
    """The rows of one whole file (its EncodedClips); a cut-off file's rows all carry the duration its data really
    has, and a note about it goes to `notes`."""
    last = items[-1].clip
    cut = last.truncated_at  # found out only when its last windows were read
    if cut is not None:
        notes.append(FileIssue(last.path, f"{display(last.path)!r}: truncated: its data ends at {cut:.2f} s "
                                          f"of a stated {last.info.duration:.2f} s; embedded up to there"))
    rows = []
    for it in items:
        c, name = it.clip, os.fsencode(it.clip.path)
        rows.append((name.decode("utf-8", "backslashreplace"), name, c.start, c.end,
                     c.info.duration if cut is None else cut, c.info.width, c.info.height, c.info.fps,
                     it.embedding.float().cpu().numpy(), it.caption, list(c.timestamps)))
    return rows


def rows_table(rows: list[tuple], schema):
    """`file_rows` output as an Arrow table of `schema` (the caption and frame_times columns only where the schema
    has them)."""
    import pyarrow as pa

    if not rows:
        return schema.empty_table()
    cols = list(zip(*rows))
    emb = np.stack(cols[8]).astype(np.float32)  # (R, E)
    arrays = [pa.array(c, type=t) for c, t in zip(cols[:8], schema.types[:8])]
    arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1]))
    if "caption" in schema.names:
        arrays.append(pa.array(cols[9], type=pa.string()))
    if "frame_times" in schema.names:
        arrays.append(pa.array(cols[10], type=pa.list_(pa.float64())))
    return pa.Table.from_arrays(arrays, schema=schema)


def _write(writer, rows: list[tuple], schema) -> int:
    """Write `rows` as one row group; returns how many."""
    if rows:
        writer.write_table(rows_table(rows, schema))
    return len(rows)


def embedding_files(source: str | os.PathLike) -> list[Path]:
    """The Parquet files of embeddings at `source`: the file `embed` wrote, or the shards in a folder the ray
    backend wrote (names starting with '_' or '.', such as the errors table and temp files, left out)."""
    src = Path(source)
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise OptionError(f"{display(src)!r} does not exist; give the .parquet file or the folder of shards that "
                          "`videococa embed` wrote")
    files = sorted(p for p in src.glob("*.parquet") if not p.name.startswith(("_", ".")))
    if not files:
        raise OptionError(f"{display(src)!r} holds no Parquet shards of embeddings")
    return files


def embedding_settings(path: str | os.PathLike) -> dict[str, str]:
    """The protocol an embedding file records (`videococa.*` metadata, prefix removed) plus `embed_dim`."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # noqa: BLE001 - unreadable for any reason: say which file
        raise OptionError(f"{display(path)!r} is not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items() if k.startswith(b"videococa.")}
    if "embedding" not in schema.names or "videococa.fingerprint" not in meta:
        raise OptionError(f"{display(path)!r} was not written by `videococa embed` (no embedding column or no protocol)")
    out = {k[len("videococa."):]: v for k, v in meta.items()}
    out["embed_dim"] = str(schema.field("embedding").type.list_size)
    out.setdefault("sampling", "uniform")  # files that record none were read uniformly
    return out


@renamed_keywords(frames="num_frames")
def embed_to_parquet(model: VideoCoCa, paths: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                     num_frames: int = 8, pooling: Pooling = "attentional", segment: float | None = None,
                     captions: GenerationConfig | None = None, batch_size: int = 4, workers: int = 2,
                     row_group: int = 256, progress: bool = False, sampling: Sampling = "uniform") -> EmbedReport:
    """Embed each video (or each `segment`-second window) and write one Parquet row per embedding.

    Columns: path (text; bytes of a non-UTF-8 name as \\xNN escapes), path_bytes (the name's raw bytes),
    start, end, duration, width, height, fps, embedding (fixed-size list of float32), plus the protocol as
    file-level metadata (`VideoCoCa.provenance()`: model, pretrained, weights fingerprint, frames, pooling, ...).
    With `captions` (how to decode), also a `caption` column, and the decoding in the metadata. With `sampling`
    keyframes (as in `read_video`), also a `frame_times` column: the times of the keyframes actually used.

    OUT is replaced only by a complete run. An interrupted run (Ctrl-C) leaves OUT as it was and keeps
    the videos it finished in OUT.partial; running again with the same settings takes them over and embeds
    only the rest. A killed run's temp file (OUT.<pid>.part) is removed by the next run.
    """
    import pyarrow.parquet as pq

    out = Path(out)
    if out.is_dir():
        raise OptionError(f"--out {display(out)!r} is a directory; give a file name such as embeddings.parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    schema = embed_schema(model, num_frames, pooling, segment, captions, sampling)
    partial = out.with_name(out.name + ".partial")
    report = EmbedReport(str(out), partial=str(partial))
    _clean_stale_parts(out, report)
    carried = _resumable(partial, schema, {os.fspath(p) for p in paths}, report)
    done = set() if carried is None else {os.fsdecode(b) for b in carried.column("path_bytes").to_pylist()}
    report.resumed = len(done)
    rows: list[tuple] = []  # rows of whole files, not yet written
    tmp = out.with_name(f"{out.name}.{os.getpid()}.part")
    try:
        with pq.ParquetWriter(str(tmp), schema) as writer:
            if carried is not None and carried.num_rows:
                writer.write_table(carried)
                report.rows = carried.num_rows
            try:
                for item in encode_files(model, [p for p in paths if os.fspath(p) not in done], num_frames=num_frames,
                                         batch_size=batch_size, workers=workers, pooling=pooling, segment=segment,
                                         captions=captions, progress=progress, desc="embed", sampling=sampling):
                    if isinstance(item, FileIssue):
                        report.failed.append(item)
                        continue
                    rows += file_rows(item, report.notes)
                    done.add(item[0].clip.path)
                    if len(rows) >= row_group:
                        report.rows += _write(writer, rows, schema)
                        rows.clear()
            except KeyboardInterrupt:
                report.interrupted = True
            report.rows += _write(writer, rows, schema)
        if not report.interrupted:
            os.replace(tmp, out)
            partial.unlink(missing_ok=True)
        elif report.rows:
            os.replace(tmp, partial)
    finally:
        tmp.unlink(missing_ok=True)
    report.videos = len(done)
    return report
