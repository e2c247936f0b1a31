"""A persistent, incremental index of a video library: SQLite is the record, FAISS the search structure.

Layout of an index directory:
    index.sqlite   settings (model, frames, pooling, segment), one row per file (path, size, mtime,
                   duration) and one row per entry (file, start, end, float32 embedding). WAL mode.
    vectors.faiss  the FAISS index over the entries' embeddings, with entry ids as FAISS ids.
    vectors.json   which SQLite generation vectors.faiss reflects, and its kind.

Every file is added in one SQLite transaction (its old entries removed, new ones inserted, the
generation counter bumped), so an interrupted run (Ctrl-C, kill -9, power loss) keeps every file
committed before it and never leaves half a file. The FAISS file is derived data: it is written
atomically after a run, and rebuilt from SQLite when its generation does not match (after a crash).

FAISS kind, chosen by size and recorded: below `EXACT_LIMIT` entries, exact inner-product search
(IndexFlatIP); at or above, an inverted-file index (IndexIVFFlat, nlist ~ 4*sqrt(n), `nprobe` probed
lists), which supports removal by id, so deleted and re-embedded files never force a rebuild.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import IndexStoreError
from ..files import atomic_path, write_json_atomic
from ..video.loader import LoadError

EXACT_LIMIT = 100_000
"""Entries below which search is exact."""
DEFAULT_NPROBE = 64
"""Inverted lists probed per query in the approximate index (see bench/search.py)."""
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    duration REAL NOT NULL,
    indexed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    start REAL NOT NULL,
    end REAL NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_file ON entries(file_id);
"""


@dataclass(frozen=True)
class SearchHit:
    """One ranked result of a search."""

    path: str
    """The video file."""
    start: float
    """Start of the matching segment (seconds; 0 for whole-file entries)."""
    end: float
    """End of the matching segment (seconds; the duration for whole-file entries)."""
    score: float
    """Cosine similarity between query and entry embeddings."""
    entry_id: int
    """The entry's id in the index."""


@dataclass
class UpdateReport:
    """What one add/update run did."""

    added: list[str] = field(default_factory=list)
    """Files embedded for the first time."""
    updated: list[str] = field(default_factory=list)
    """Files re-embedded because their size or modification time changed."""
    unchanged: list[str] = field(default_factory=list)
    """Files skipped: already indexed and unchanged."""
    removed: list[str] = field(default_factory=list)
    """Files dropped because they no longer exist."""
    failed: list[LoadError] = field(default_factory=list)
    """Files that could not be read, with reasons (the rest were indexed)."""


def _abspath(p: str | os.PathLike) -> str:
    return os.path.abspath(os.fspath(p))


class VideoIndex:
    """Open (or create) the index at directory `path`.

    A new index needs `model`; its name, weights fingerprint, `frames`, `pooling` and `segment` are
    recorded. Reopening with a different model or settings raises IndexStoreError. Without `model`, an
    existing index opens for inspection; `settings` tells which model to load for searching.
    """

    def __init__(self, path: str | os.PathLike, model=None, *, frames: int | None = None, pooling: str | None = None,
                 segment: float | None = None, create: bool = True):
        self.path = Path(path)
        self.db_path = self.path / "index.sqlite"
        self.model = model
        exists = self.db_path.is_file()
        if not exists:
            if not create:
                raise IndexStoreError(f"no video index at {str(self.path)!r} (expected {str(self.db_path)!r}); "
                                      "create one with `videococa index VIDEO_DIR --index PATH`")
            if model is None:
                raise IndexStoreError(f"creating the index {str(self.path)!r} needs a model")
            if self.path.exists() and not self.path.is_dir():
                raise IndexStoreError(f"index path {str(self.path)!r} is a file; an index is a directory")
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                probe = self.path / f".write-test-{os.getpid()}"
                probe.write_bytes(b"")
                probe.unlink()
            except OSError as exc:
                raise IndexStoreError(f"cannot create the index at {str(self.path)!r}: {exc.strerror or exc}") from None
        try:
            self.db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise IndexStoreError(f"{str(self.db_path)!r} is not a usable video index: {exc}") from None
        self.settings = self._settings()
        if not self.settings:
            self._init_settings(model, frames or 8, pooling or "attentional", segment)
        else:
            self._check(model, frames, pooling, segment)
        self.dim = int(self.settings["embed_dim"])
        self._faiss = None
        self._saved_generation = -1
        self._load_or_rebuild()

    # ------------------------------------------------------------------ settings
    def _settings(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM settings").fetchall())

    def _init_settings(self, model, frames: int, pooling: str, segment: float | None) -> None:
        import videococa

        info = model.info
        values = {
            "schema_version": SCHEMA_VERSION, "model": info.name, "pretrained": info.pretrained or "",
            "precision": model.precision, "fingerprint": model.fingerprint(), "embed_dim": info.embed_dim,
            "frames": frames, "sampling": "uniform", "pooling": pooling, "segment": segment or 0,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "videococa": videococa.__version__,
            "generation": 0,
        }
        with self._tx():
            self.db.executemany("INSERT INTO settings VALUES (?, ?)", [(k, str(v)) for k, v in values.items()])
        self.settings = self._settings()

    def _check(self, model, frames, pooling, segment) -> None:
        s = self.settings
        if int(s.get("schema_version", -1)) != SCHEMA_VERSION:
            raise IndexStoreError(f"index {str(self.path)!r} has schema version {s.get('schema_version')}; "
                                  f"this videococa reads version {SCHEMA_VERSION}")
        problems = []
        if model is not None and model.fingerprint() != s["fingerprint"]:
            problems.append(f"it was built with model {s['model']} [{s['pretrained'] or 'random weights'}, "
                            f"{s['precision']}] (weights {s['fingerprint']}), not {model.info.name} "
                            f"[{model.info.pretrained or 'random weights'}, {model.precision}] "
                            f"(weights {model.fingerprint()})")
        if frames is not None and frames != int(s["frames"]):
            problems.append(f"it uses {s['frames']} frames per entry, not {frames}")
        if pooling is not None and pooling != s["pooling"]:
            problems.append(f"it uses {s['pooling']} pooling, not {pooling}")
        if segment is not None and float(segment) != float(s["segment"]):
            problems.append(f"it uses segments of {float(s['segment']) or 'whole files'} s, not {segment}")
        if problems:
            raise IndexStoreError(f"index {str(self.path)!r} does not match: " + "; ".join(problems)
                                  + ". Use the index's own settings or a new index path.")

    @property
    def frames(self) -> int:
        return int(self.settings["frames"])

    @property
    def pooling(self) -> str:
        return self.settings["pooling"]

    @property
    def segment(self) -> float | None:
        return float(self.settings["segment"]) or None

    @property
    def generation(self) -> int:
        return int(self.db.execute("SELECT value FROM settings WHERE key='generation'").fetchone()[0])

    def _tx(self):
        return _Transaction(self.db)

    # ------------------------------------------------------------------ FAISS (derived)
    def _all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        rows = self.db.execute("SELECT id, vector FROM entries ORDER BY id").fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
        return ids, vecs

    def _load_or_rebuild(self) -> None:
        import faiss

        meta_path, faiss_path = self.path / "vectors.json", self.path / "vectors.faiss"
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("generation") == self.generation and faiss_path.is_file():
                index = faiss.read_index(str(faiss_path))
                if index.ntotal == self._count():
                    self._faiss, self.faiss_kind = index, meta["kind"]
                    self._saved_generation = meta["generation"]
                    self._apply_nprobe()
                    return
        except (OSError, ValueError, RuntimeError, KeyError):
            pass  # missing, stale or damaged: rebuilt below from the SQLite record
        self.rebuild()

    def rebuild(self) -> None:
        """Rebuild the FAISS index from the SQLite record (kind chosen by size) and save it."""
        ids, vecs = self._all_vectors()
        self._faiss, self.faiss_kind = build_faiss(vecs, ids, self.dim)
        self._apply_nprobe()
        self._save_faiss()

    def _apply_nprobe(self, nprobe: int = DEFAULT_NPROBE) -> None:
        if hasattr(self._faiss, "nprobe"):
            self._faiss.nprobe = min(nprobe, self._faiss.nlist)

    def _save_faiss(self) -> None:
        import faiss

        gen = self.generation
        with atomic_path(self.path / "vectors.faiss") as tmp:
            faiss.write_index(self._faiss, str(tmp))
        write_json_atomic(self.path / "vectors.json",
                          {"generation": gen, "kind": self.faiss_kind, "count": int(self._faiss.ntotal)})
        self._saved_generation = gen

    def _settle(self) -> None:
        """After a run: switch exact <-> approximate if the size crossed the limit, then save."""
        n = self._faiss.ntotal
        if (self.faiss_kind == "exact") != (n < EXACT_LIMIT):
            self.rebuild()
        elif self.generation != self._saved_generation:
            self._save_faiss()

    # ------------------------------------------------------------------ contents
    def _count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def __len__(self) -> int:
        """Number of entries (files, or segments with `segment`)."""
        return self._count()

    def files(self) -> list[dict]:
        """Indexed files with size, mtime, duration and number of entries."""
        rows = self.db.execute(
            "SELECT f.path, f.size, f.mtime_ns, f.duration, COUNT(e.id) FROM files f "
            "LEFT JOIN entries e ON e.file_id = f.id GROUP BY f.id ORDER BY f.path").fetchall()
        return [dict(path=r[0], size=r[1], mtime_ns=r[2], duration=r[3], entries=r[4]) for r in rows]

    def _remove_file(self, path: str) -> list[int] | None:
        """Delete a file's rows (inside a transaction); its entry ids, or None if it was not indexed."""
        row = self.db.execute("SELECT id FROM files WHERE path = ?", (path,)).fetchone()
        if row is None:
            return None
        ids = [r[0] for r in self.db.execute("SELECT id FROM entries WHERE file_id = ?", (row[0],))]
        self.db.execute("DELETE FROM entries WHERE file_id = ?", (row[0],))
        self.db.execute("DELETE FROM files WHERE id = ?", (row[0],))
        return ids

    def _bump(self) -> None:
        self.db.execute("UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")

    def _faiss_remove(self, ids: Sequence[int]) -> None:
        if ids:
            self._faiss.remove_ids(np.asarray(ids, dtype=np.int64))

    def remove(self, paths: Iterable[str | os.PathLike]) -> list[str]:
        """Drop files (all their entries) from the index; returns those that were indexed."""
        removed = []
        for p in paths:
            path = _abspath(p)
            with self._tx():
                ids = self._remove_file(path)
                if ids is not None:
                    self._bump()
            if ids is not None:
                self._faiss_remove(ids)
                removed.append(path)
        self._settle()
        return removed

    # ------------------------------------------------------------------ adding
    def _needs_model(self, what: str):
        if self.model is None:
            raise IndexStoreError(f"{what} needs the index's model ({self.settings['model']} "
                                  f"[{self.settings['pretrained'] or 'random weights'}]); open the index with model=")
        return self.model

    def add(self, inputs: Sequence[str | os.PathLike], *, batch_size: int = 4, workers: int = 2,
            progress: bool = False, prune: bool = False) -> UpdateReport:
        """Index new files, re-embed changed ones, skip unchanged ones. Directories are searched recursively.

        With `prune=True` (what `update` does), indexed files under the given directories (or given
        by name) that no longer exist are dropped.
        """
        from ..tasks.batch import encode_videos, expand_paths

        model = self._needs_model("adding videos")
        report = UpdateReport()
        paths, errors = expand_paths([p for p in inputs if not (prune and not os.path.exists(p))])
        report.failed.extend(errors)
        known = {r[0]: (r[1], r[2]) for r in self.db.execute("SELECT path, size, mtime_ns FROM files")}
        to_embed: list[tuple[str, int, int]] = []
        for p in paths:
            path = _abspath(p)
            try:
                st = os.stat(path)
            except OSError as exc:
                report.failed.append(LoadError(p, f"{p!r}: {exc.strerror}"))
                continue
            if known.get(path) == (st.st_size, st.st_mtime_ns):
                report.unchanged.append(path)
            else:
                to_embed.append((path, st.st_size, st.st_mtime_ns))
        if prune:  # an input that no longer exists is how a deleted file is named; a typo names nothing indexed
            for p in inputs:
                root = _abspath(p)
                gone = [k for k in known if (k == root or k.startswith(root.rstrip(os.sep) + os.sep))
                        and not os.path.exists(k)]
                report.removed.extend(k for k in gone if k not in report.removed)
                if not os.path.exists(p) and not gone:
                    report.failed.append(LoadError(os.fspath(p), f"{os.fspath(p)!r}: no such file or directory"))
        try:
            for path in report.removed:
                with self._tx():
                    ids = self._remove_file(path) or []
                    self._bump()
                self._faiss_remove(ids)
            stats = {p: (size, mtime) for p, size, mtime in to_embed}
            pending: list = []  # the entries of the file being read, until it is complete
            current: str | None = None

            def commit(path: str, items: list) -> None:
                size, mtime = stats[path]
                duration = items[0].clip.info.duration
                vecs = [F.normalize(x.embedding.float(), dim=-1).cpu().numpy().astype(np.float32) for x in items]
                with self._tx():
                    old = self._remove_file(path) or []
                    cur = self.db.execute("INSERT INTO files (path, size, mtime_ns, duration, indexed_at) "
                                          "VALUES (?, ?, ?, ?, ?)", (path, size, mtime, duration, time.time()))
                    fid = cur.lastrowid
                    new_ids = []
                    for x, v in zip(items, vecs):
                        c = self.db.execute("INSERT INTO entries (file_id, start, end, vector) VALUES (?, ?, ?, ?)",
                                            (fid, x.clip.start, x.clip.end, v.tobytes()))
                        new_ids.append(c.lastrowid)
                    self._bump()
                self._faiss_remove(old)
                self._faiss.add_with_ids(np.stack(vecs), np.asarray(new_ids, dtype=np.int64))
                (report.updated if path in known else report.added).append(path)

            for item in encode_videos(model, [p for p, _, _ in to_embed], frames=self.frames, batch_size=batch_size,
                                      workers=workers, pooling=self.pooling, segment=self.segment,
                                      progress=progress, desc="index"):
                if isinstance(item, LoadError):
                    report.failed.append(item)
                    continue
                if current is not None and item.clip.path != current:
                    commit(current, pending)
                    pending = []
                current = item.clip.path
                pending.append(item)
            if current is not None and pending:
                commit(current, pending)
        finally:
            self._settle()  # also on Ctrl-C: everything committed so far is searchable at once
        return report

    def update(self, inputs: Sequence[str | os.PathLike], **kwargs) -> UpdateReport:
        """`add`, and drop indexed files under `inputs` that no longer exist."""
        return self.add(inputs, prune=True, **kwargs)

    # ------------------------------------------------------------------ search
    def search_embedding(self, query: torch.Tensor | np.ndarray, *, top_k: int = 10) -> list[SearchHit]:
        """Rank entries by cosine similarity to a (E,) embedding."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        q = np.asarray(torch.as_tensor(query).float().reshape(1, -1).cpu(), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise ValueError(f"query has {q.shape[1]} dimensions; the index holds {self.dim}")
        q /= max(float(np.linalg.norm(q)), 1e-12)
        if self._faiss.ntotal == 0:
            return []
        scores, ids = self._faiss.search(q, min(top_k, self._faiss.ntotal))
        found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
        if not found:
            return []
        marks = ",".join("?" * len(found))
        rows = {r[0]: r[1:] for r in self.db.execute(
            f"SELECT e.id, f.path, e.start, e.end FROM entries e JOIN files f ON f.id = e.file_id WHERE e.id IN ({marks})",
            [i for i, _ in found])}
        return [SearchHit(rows[i][0], rows[i][1], rows[i][2], s, i) for i, s in found if i in rows]

    def search(self, query: str | torch.Tensor, *, top_k: int = 10) -> list[SearchHit]:
        """Text -> video (a string) or embedding -> video (a tensor)."""
        if isinstance(query, str):
            if not query.strip():
                raise ValueError("the search query is empty")
            query = self._needs_model("text search").encode_text([query])[0]
        return self.search_embedding(query, top_k=top_k)

    def search_video(self, video: str | os.PathLike, *, top_k: int = 10) -> list[SearchHit]:
        """Video -> video: the whole query video, read with the index's frames and pooling."""
        from ..video.reader import read_video

        model = self._needs_model("video search")
        info = model.info
        clip = read_video(video, self.frames, size=info.image_size, mean=info.image_mean, std=info.image_std)
        return self.search_embedding(model.encode_video(clip.frames[None], pooling=self.pooling)[0], top_k=top_k)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "VideoIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False


def build_faiss(vectors: np.ndarray, ids: np.ndarray, dim: int, *, exact_limit: int = EXACT_LIMIT,
                seed: int = 0) -> tuple[object, str]:
    """(index, kind): exact IndexIDMap2(IndexFlatIP) below `exact_limit` vectors, else IndexIVFFlat (inner product)."""
    import faiss

    n = len(vectors)
    if n < exact_limit:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        kind = "exact"
    else:
        nlist = int(2 ** round(math.log2(4 * math.sqrt(n))))  # 4*sqrt(n), to a power of two: 4096 at 1M
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = vectors[rng.choice(n, size=min(n, 40 * nlist), replace=False)]  # FAISS asks >= 39 per list
        index.cp.seed = seed
        index.train(sample)
        kind = "ivf"
    if n:
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
    return index, kind
