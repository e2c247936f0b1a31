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
(IndexFlatIP); at or above, an inverted-file index (nlist ~ 4*sqrt(n), `nprobe` probed lists), which supports
removal by id, so deleted and re-embedded files never force a rebuild. Which inverted-file index is a setting
of the index (`faiss=`, recorded in SQLite, so it reopens the same way):
    ivf     IndexIVFFlat (the default): full float32 vectors, 4 bytes per dimension per entry in memory.
    ivfpq   IndexIVFPQ, for libraries past ~10M entries: each vector as a product-quantisation code of
            dim/8 bytes (`PQ_DIMS_PER_CODE_BYTE`: 64 bytes at 512 dimensions, 16x smaller) plus its 8-byte
            id, with the coarse centroids and PQ codebook trained on a sample of the stored vectors. The
            `RERANK` best candidates are re-scored exactly from the float32 vectors SQLite keeps, so scores are
            true inner products and the order within them is exact (bench/search.py measures the recall).
Either way the FAISS file is derived: changing the setting rebuilds it from the SQLite record.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import sqlite3
import sys
import time
import urllib.parse
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..deprecation import renamed_attribute, renamed_keywords
from ..errors import IndexStoreError, OptionError
from ..files import FileLock, atomic_path, remove_stale_parts, write_json_atomic
from ..models.decoding import GenerationConfig
from ..models.videococa import POOLINGS
from ..paths import display, from_db, to_db
from ..tasks.batch import encode_files, scan_inputs
from ..tasks.embed import caption_setting, embedding_files, embedding_settings
from ..video.loader import FileIssue
from ..video.reader import read_video
from ..limits import MAX_FRAMES
from ..video.sampling import WINDOW_SAMPLINGS, Sampling, check_sampling, check_segment, clip_windows
from .query import GroupBy, SearchFilter, check_group_by, fts_query, page, rrf

EXACT_LIMIT = 100_000
"""Entries below which search is exact."""
FAISS_KINDS: tuple[str, ...] = ("ivf", "ivfpq")
"""Inverted-file indexes an index may use at or above EXACT_LIMIT entries (the `faiss` setting)."""
PQ_DIMS_PER_CODE_BYTE = 8
"""ivfpq: dimensions per byte of product-quantisation code (8-bit sub-quantisers of 8 dimensions each)."""
RERANK = 1024
"""ivfpq: candidates re-scored exactly from SQLite's float32 vectors before the first hit is returned (recall@10 at
1M: 0.89 with 256, 0.98 with 1024 on our model's embeddings; bench/search.py --rerank-sweep)."""
DEFAULT_NPROBE = 64
"""Inverted lists probed per query in the approximate index (see bench/search.py)."""
SCHEMA_VERSION = 3
SQL_CHUNK = 900
"""Ids per `IN (...)` query: below SQLite's limit on bound variables (999 in old builds)."""
CAPTION_SETTING = "greedy:20"
"""How indexing captions each entry (recorded in the index): greedy decoding, at most 20 new tokens."""
INDEX_CAPTIONS = GenerationConfig(method="greedy", max_len=int(CAPTION_SETTING.split(":")[1]))
"""CAPTION_SETTING as the decoding config the batch encoders take (and embedding files record)."""
HEAD_BYTES = 1 << 20
"""Bytes hashed from the start of each file to recognise it when it moves."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    duration REAL NOT NULL,
    indexed_at REAL NOT NULL,
    head_sha256 TEXT
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
_CAPTIONS_DDL = (
    """CREATE TABLE IF NOT EXISTS captions (
        entry_id INTEGER PRIMARY KEY REFERENCES entries(id) ON DELETE CASCADE,
        text TEXT NOT NULL)""",
    "CREATE VIRTUAL TABLE IF NOT EXISTS captions_fts USING fts5(text, content='captions', content_rowid='entry_id')",
    """CREATE TRIGGER IF NOT EXISTS captions_ai AFTER INSERT ON captions BEGIN
        INSERT INTO captions_fts(rowid, text) VALUES (new.entry_id, new.text); END""",
    """CREATE TRIGGER IF NOT EXISTS captions_ad AFTER DELETE ON captions BEGIN
        INSERT INTO captions_fts(captions_fts, rowid, text) VALUES ('delete', old.entry_id, old.text); END""",
)
"""Schema 3: a caption per entry (optional), and its words in an FTS5 table kept in step by triggers."""
_SCHEMA += "".join(f"{stmt};\n" for stmt in _CAPTIONS_DDL)
_FRAME_TIMES_DDL = """CREATE TABLE IF NOT EXISTS frame_times (
    entry_id INTEGER PRIMARY KEY REFERENCES entries(id) ON DELETE CASCADE,
    times TEXT NOT NULL)"""
"""The times (s, a JSON list) of the frames an entry was embedded from, kept by indexes made with keyframes
sampling (where they differ from the sample times); created with every new index, filled only by those."""
_SCHEMA += f"{_FRAME_TIMES_DDL};\n"
# `path` holds UTF-8 text, or the raw bytes (a BLOB) of a name that is not UTF-8 (see videococa.paths.to_db).


_REQUIRED = ("schema_version", "model", "pretrained", "precision", "fingerprint", "embed_dim", "frames", "pooling",
             "segment", "generation")
"""Settings every index records (`index_id` too, since schema 2)."""


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
    video_id: int | None = None
    """The id of the entry's file in the index (`VideoIndex.video(video_id)`)."""
    caption: str | None = None
    """The segment's caption, when the index stores captions."""
    caption_match: bool = False
    """True when the query's words matched the stored caption (hybrid search)."""


@dataclass(frozen=True)
class VideoRecord:
    """One indexed file."""

    id: int
    """Its id in the index (stable while the file stays indexed, also when it moves)."""
    path: str
    """Absolute path."""
    size: int
    """Bytes, when indexed."""
    mtime_ns: int
    """Modification time when indexed (nanoseconds since the epoch)."""
    duration: float
    """Seconds (0 for a still image; where the data ends for a truncated file)."""
    indexed_at: float
    """Unix time it was (last) embedded."""
    entries: int
    """Number of entries (segments) it has."""


@dataclass(frozen=True)
class Segment:
    """One entry of a file: a time range with its caption."""

    entry_id: int
    """The entry's id."""
    start: float
    """Seconds."""
    end: float
    """Seconds."""
    caption: str | None = None
    """Stored caption, if the index stores captions."""
    frame_times: list[float] | None = None
    """Times (s) of the frames it was embedded from, in an index made with keyframes sampling (else None)."""


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
    moved: list[tuple[str, str]] = field(default_factory=list)
    """(old path, new path) of files recognised at a new place (same size, mtime and first MiB): not re-embedded."""
    failed: list[FileIssue] = field(default_factory=list)
    """Files (or inputs) that could not be read, with reasons (the rest were indexed)."""
    notes: list[FileIssue] = field(default_factory=list)
    """Things done on purpose that a user should hear of: skipped links and FIFOs, truncated files indexed in
    part, roots whose entries were kept."""


@dataclass
class RepairReport:
    """What `VideoIndex.repair` salvaged."""

    files_kept: int = 0
    """Files whose record and every entry were readable."""
    entries_kept: int = 0
    """Their entries."""
    files_dropped: list[str] = field(default_factory=list)
    """Files with unreadable or incomplete entries: the next `index` run embeds them again."""
    damaged_copy: str | None = None
    """Where the damaged database was moved (kept for inspection; delete it when done)."""
    fresh: bool = False
    """Nothing was salvageable (settings lost): the index starts empty."""


def _abspath(p: str | os.PathLike) -> str:
    return os.path.abspath(os.fspath(p))


def _under(root: str, paths: Iterable[str]) -> list[str]:
    prefix = root.rstrip(os.sep) + os.sep
    return [k for k in paths if k == root or k.startswith(prefix)]


def _gone(path: str) -> bool:
    """True only when the file is known not to exist (ENOENT); an unreadable or unreachable path is not gone."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def head_sha256(path: str | os.PathLike) -> str | None:
    """SHA-256 of a file's first MiB (with size and mtime, what recognises a moved file); None if unreadable."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read(HEAD_BYTES)).hexdigest()
    except OSError:
        return None


def _say_waiting(index: Path, pid: int | None) -> None:
    who = f"pid {pid}" if pid else "pid unknown"
    print(f"videococa: another process is indexing {display(index)} ({who}); waiting for it to finish",
          file=sys.stderr, flush=True)


def _guarded(method):
    """Turn SQLite errors inside a public method into an IndexStoreError that names the index and the way out."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise self._db_error(exc) from None

    return wrapper


def faiss_ids(index) -> np.ndarray:
    """The ids held by a FAISS index (IndexIDMap2 or IndexIVF), sorted."""
    import faiss

    if hasattr(index, "id_map"):
        ids = faiss.vector_to_array(index.id_map)
    else:
        ivf = faiss.extract_index_ivf(index)
        lists = ivf.invlists
        parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                 for i in range(ivf.nlist) if lists.list_size(i)]
        ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return np.sort(ids.astype(np.int64))


class VideoIndex:
    """Open (or create) the index at directory `path`.

    A new index needs `model`; its name, weights fingerprint, `num_frames`, `pooling`, `segment` and frame
    `sampling` (uniform, the default, or keyframes: see `read_video`) are recorded; an index that records no
    sampling was made with uniform. Reopening with a different model or settings raises IndexStoreError. Without `model`, an
    existing index opens for inspection; `settings` tells which model to load for searching.

    Several processes may use one index: writers (`add`, `update`, `remove`, `repair`) take turns through a
    lock file (`on_wait(index_path, pid)` is called once when one has to wait; by default it says so on
    stderr); searches never wait, and see every file committed before they run.
    """

    @renamed_keywords(frames="num_frames")
    def __init__(self, path: str | os.PathLike, model=None, *, num_frames: int | None = None,
                 pooling: str | None = None, segment: float | None = None, create: bool = True, on_wait=None,
                 captions: bool | None = None, faiss: str | None = None, sampling: Sampling | None = None):
        if sampling is not None:
            check_sampling(sampling, WINDOW_SAMPLINGS)
        if num_frames is not None and (not isinstance(num_frames, int) or not 1 <= num_frames <= MAX_FRAMES):
            raise OptionError(f"num_frames must be an integer from 1 to {MAX_FRAMES}, got {num_frames!r}")
        if pooling is not None and pooling not in POOLINGS:
            raise OptionError(f"unknown pooling {pooling!r}; choose one of: {', '.join(POOLINGS)}")
        check_segment(segment)
        if faiss is not None and faiss not in FAISS_KINDS:
            raise OptionError(f"unknown FAISS index kind {faiss!r}; choose one of: {', '.join(FAISS_KINDS)}")
        self.path = Path(path)
        self.db_path = self.path / "index.sqlite"
        self.model = model
        self.on_wait = on_wait or _say_waiting
        self._lock = FileLock(self.path / "index.lock")
        self._depth = 0
        self._faiss = None
        self._ids = np.zeros(0, dtype=np.int64)
        self._synced = -1
        self._saved_generation = -1
        if self.db_path.is_file() and self.db_path.stat().st_size > 0:
            self._connect()
            self._ino = os.stat(self.db_path).st_ino
            try:
                self.settings = self._settings()
                old = int(self.settings.get("schema_version", SCHEMA_VERSION)) < SCHEMA_VERSION
                if not self.settings or old:  # being created by another process this moment, or an older schema
                    with self._locked():
                        self.settings = self._settings()
                        if self.settings and old:
                            self._migrate()
                            self.settings = self._settings()
            except sqlite3.DatabaseError as exc:
                raise self._db_error(exc) from None
            if not self.settings:
                raise IndexStoreError(f"{display(self.db_path)!r} holds no index settings: it is not a video index "
                                      f"(or was damaged); {self._repair_hint()}")
        else:
            self._create(model, num_frames, pooling, segment, create, bool(captions), sampling)
        self._check(model, num_frames, pooling, segment, captions, sampling)
        if faiss is not None and faiss != self.approximate:
            self._record_faiss(faiss)
        self.dim = int(self.settings["embed_dim"])
        try:
            self._open_faiss()
        except sqlite3.DatabaseError as exc:
            raise self._db_error(exc) from None

    # ------------------------------------------------------------------ opening and creating
    def _connect(self) -> None:
        try:
            # check_same_thread=False: a server shares one reader between threads, one at a time (its own lock)
            self.db = sqlite3.connect(self.db_path, timeout=60, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as exc:
            raise IndexStoreError(f"{display(self.db_path)!r} is not a usable video index: {exc}") from None

    def _create(self, model, num_frames, pooling, segment, create: bool, captions: bool, sampling) -> None:
        shown = display(self.path)
        if self.db_path.is_file():  # 0 bytes: maybe another process is creating it this moment; decided under the lock
            pass
        elif not create:
            raise IndexStoreError(f"no video index at {shown!r} (expected {display(self.db_path)!r}); "
                                  "create one with `videococa index VIDEO_DIR --index PATH`")
        if model is None:
            if self.db_path.is_file():
                raise IndexStoreError(f"{display(self.db_path)!r} is empty (0 bytes): the index record was lost; "
                                      f"{self._repair_hint()}")
            raise IndexStoreError(f"creating the index {shown!r} needs a model")
        if self.path.exists() and not self.path.is_dir():
            raise IndexStoreError(f"index path {shown!r} is a file; an index is a directory")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise IndexStoreError(f"cannot create the index at {shown!r}: {exc.strerror or exc}") from None
        with self._locked():  # two processes creating one index: the second waits, then opens what the first made
            if self.db_path.is_file() and self.db_path.stat().st_size == 0:
                raise IndexStoreError(f"{display(self.db_path)!r} is empty (0 bytes): the index record was lost "
                                      f"(a full disk or an interrupted copy?); {self._repair_hint()}")
            self._connect()
            self._ino = os.stat(self.db_path).st_ino
            try:
                self.db.executescript(_SCHEMA)
                self.settings = self._settings()
                if not self.settings:
                    self._init_settings(model, num_frames or 8, pooling or "attentional", segment, captions,
                                        sampling or "uniform")
            except sqlite3.DatabaseError as exc:
                raise self._db_error(exc) from None

    def _repair_hint(self) -> str:
        return f"run `videococa index --repair --index {display(self.path)}` (or delete the folder and index again)"

    def _db_error(self, exc: sqlite3.DatabaseError) -> IndexStoreError:
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc):
            return IndexStoreError(f"the disk holding the index {display(self.path)!r} is full; free some space and "
                                   "run the command again (what was committed is kept)")
        if "locked" in str(exc) or "busy" in str(exc):
            return IndexStoreError(f"index {display(self.path)!r} stayed locked by another process for a minute ({exc})")
        return IndexStoreError(f"index {display(self.path)!r} is damaged ({exc}); {self._repair_hint()}; files whose "
                               "entries cannot be read are indexed again on the next run")

    # ------------------------------------------------------------------ settings
    def _settings(self) -> dict[str, str]:
        try:
            return dict(self.db.execute("SELECT key, value FROM settings").fetchall())
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return {}
            raise

    def _init_settings(self, model, num_frames: int, pooling: str, segment: float | None, captions: bool,
                       sampling: Sampling) -> None:
        values = {
            "captions": CAPTION_SETTING if captions else "",
            "schema_version": SCHEMA_VERSION, "embed_dim": model.info.embed_dim,
            **model.provenance(frames=num_frames, pooling=pooling, segment=segment or 0, sampling=sampling),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "generation": 0, "index_id": uuid.uuid4().hex,  # tells this record from one made anew at the same path
        }
        with self._tx():
            self.db.executemany("INSERT OR IGNORE INTO settings VALUES (?, ?)",
                                [(k, str(v)) for k, v in values.items()])
        self.settings = self._settings()

    def _migrate(self) -> None:
        """Schema 1 -> 2: files gain head_sha256 (NULL for files indexed before: they are not recognised when moved).
        Schema 2 -> 3: the (empty) captions tables; the index records that it stores no captions."""
        with self._tx():
            version = int(self.db.execute("SELECT value FROM settings WHERE key='schema_version'").fetchone()[0])
            if version == 1:
                self.db.execute("ALTER TABLE files ADD COLUMN head_sha256 TEXT")
                self.db.execute("INSERT OR IGNORE INTO settings VALUES ('index_id', ?)", (uuid.uuid4().hex,))
            if version <= 2:
                for stmt in _CAPTIONS_DDL:
                    self.db.execute(stmt)
            self.db.execute("UPDATE settings SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    def _check(self, model, num_frames, pooling, segment, captions, sampling) -> None:
        s = self.settings
        lost = [k for k in _REQUIRED if k not in s]
        if lost:
            raise IndexStoreError(f"index {display(self.path)!r} has incomplete settings (no {', '.join(lost)}); "
                                  f"{self._repair_hint()}")
        if int(s.get("schema_version", -1)) != SCHEMA_VERSION:
            raise IndexStoreError(f"index {display(self.path)!r} has schema version {s.get('schema_version')}; "
                                  f"this videococa reads version {SCHEMA_VERSION}")
        try:
            recorded = float(s["segment"])
            check_segment(recorded or None)
        except ValueError:
            raise IndexStoreError(f"index {display(self.path)!r} records an unusable segment length "
                                  f"{s['segment']!r} (written by a videococa that did not check it); "
                                  "index into a new path") from None
        problems = []
        if model is not None and model.fingerprint() != s["fingerprint"]:
            problems.append(f"it was built with model {s['model']} [{s['pretrained'] or 'random weights'}, "
                            f"{s['precision']}] (weights {s['fingerprint']}), not {model.info.name} "
                            f"[{model.info.pretrained or 'random weights'}, {model.precision}] "
                            f"(weights {model.fingerprint()})")
        if num_frames is not None and num_frames != int(s["frames"]):
            problems.append(f"it uses {s['frames']} frames per entry, not {num_frames}")
        if pooling is not None and pooling != s["pooling"]:
            problems.append(f"it uses {s['pooling']} pooling, not {pooling}")
        if segment is not None and float(segment) != recorded:
            problems.append(f"it uses segments of {recorded or 'whole files'} s, not {segment}")
        if sampling is not None and sampling != self.sampling:
            problems.append(f"it uses {self.sampling} frame sampling, not {sampling}")
        if captions is not None and bool(captions) != self.captions:
            problems.append("it stores a caption per entry" if self.captions else "it stores no captions")
        if problems:
            raise IndexStoreError(f"index {display(self.path)!r} does not match: " + "; ".join(problems)
                                  + ". Use the index's own settings or a new index path.")

    @property
    def num_frames(self) -> int:
        return int(self.settings["frames"])

    frames = renamed_attribute("frames", "num_frames")

    @property
    def pooling(self) -> str:
        return self.settings["pooling"]

    @property
    def segment(self) -> float | None:
        return float(self.settings["segment"]) or None

    @property
    def sampling(self) -> str:
        """How frames are picked (`read_video`'s sampling): uniform (also for indexes that record none) or keyframes."""
        return self.settings.get("sampling", "uniform")

    @property
    def captions(self) -> bool:
        """True when every entry gets a caption at indexing time (searchable as text: hybrid search)."""
        return bool(self.settings.get("captions"))

    @property
    def approximate(self) -> str:
        """The inverted-file index used at or above EXACT_LIMIT entries: `ivf` or `ivfpq` (see the module docstring)."""
        return self.settings.get("faiss") or "ivf"

    def _wanted_kind(self, entries: int) -> str:
        return "exact" if entries < EXACT_LIMIT else self.approximate

    def _record_faiss(self, kind: str) -> None:
        """Record another `faiss` setting; the FAISS file made with the old one is rebuilt when it is opened."""
        try:
            with self._locked(), self._tx():
                self.db.execute("INSERT OR REPLACE INTO settings VALUES ('faiss', ?)", (kind,))
        except sqlite3.DatabaseError as exc:
            raise self._db_error(exc) from None
        except OSError as exc:
            raise IndexStoreError(f"cannot change the FAISS index kind of {display(self.path)!r}: "
                                  f"{exc.strerror or exc}") from None
        self.settings = self._settings()

    @property
    def generation(self) -> int:
        return int(self.db.execute("SELECT value FROM settings WHERE key='generation'").fetchone()[0])

    def _tx(self):
        return _Transaction(self.db)

    # ------------------------------------------------------------------ writers take turns
    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the index's writer lock (waiting for another process's, saying so once)."""
        if self._lock.held:
            yield
            return
        self._lock.acquire(on_wait=lambda pid: self.on_wait(self.path, pid))
        try:
            yield
        finally:
            self._lock.release()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A write session: the lock, a FAISS index brought up to date with SQLite, and at the end saved."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        with self._locked():
            self._alive()
            self._sync()  # another writer may have changed the record since we opened it
            self._depth = 1
            try:
                yield
            finally:
                self._depth = 0
                if self._is_alive():  # never write a FAISS file into a folder made anew by someone else
                    self._settle()  # also on Ctrl-C: everything committed so far is searchable at once

    def _is_alive(self) -> bool:
        try:
            return os.stat(self.db_path).st_ino == self._ino
        except OSError:
            return False

    def _alive(self) -> None:
        """Raise if the index folder was deleted or replaced under us (SQLite would go on writing into a lost file)."""
        if not self._is_alive():
            raise IndexStoreError(f"the index {display(self.path)!r} was deleted or replaced while this process was "
                                  "using it; what it wrote since is lost. Run the command again to rebuild it.")

    # ------------------------------------------------------------------ FAISS (derived)
    def _open_faiss(self) -> None:
        """Load vectors.faiss and bring it up to date with SQLite by content (ids), or build it afresh."""
        import faiss

        try:
            remove_stale_parts(self.path / "vectors.faiss")  # left by a process killed while saving
            remove_stale_parts(self.path / "vectors.json")
            meta = json.loads((self.path / "vectors.json").read_text())
            if meta.get("index_id") != self.settings.get("index_id"):
                raise OptionError("made for another record at this path")
            if meta["kind"] not in ("exact", self.approximate):
                raise OptionError("made with another `faiss` setting")
            index = faiss.read_index(str(self.path / "vectors.faiss"))
            if index.d != self.dim:
                raise OptionError("dimension")
            self._faiss, self.faiss_kind, self._ids = index, meta["kind"], faiss_ids(index)
            self._saved_generation = meta.get("generation", -1)
            self._apply_nprobe()
        except (OSError, ValueError, RuntimeError, KeyError, TypeError):
            self._faiss = None  # missing or damaged: built below from the SQLite record
        if self._faiss is None:
            self._rebuild_in_memory()
            changed = True
        else:
            changed = self._sync()
            if self.faiss_kind != self._wanted_kind(self._faiss.ntotal):  # grown or shrunk past the limit meanwhile
                self._rebuild_in_memory()
        try:
            can_save = changed and self._lock.acquire(blocking=False)  # unless a writer is at work
        except OSError:
            can_save = False  # a read-only index (another user's, a read-only disk): search from memory
        if can_save:
            try:
                self._save_faiss()
            except IndexStoreError:
                pass  # read-only place: searching works from memory all the same
            finally:
                self._lock.release()

    def _snapshot_ids(self, since: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """(generation, all entry ids, ids not in `since`, their vectors), read in one consistent snapshot."""
        self.db.execute("BEGIN")
        try:
            gen = self.generation
            ids = np.fromiter((r[0] for r in self.db.execute("SELECT id FROM entries ORDER BY id")), dtype=np.int64)
            new = np.setdiff1d(ids, since, assume_unique=True)
            vecs = np.zeros((len(new), self.dim), dtype=np.float32)
            if len(new):
                pos = {int(i): k for k, i in enumerate(new)}
                got = 0
                for lo in range(0, len(new), 50_000):
                    part = new[lo : lo + 50_000]
                    rows = self.db.execute("SELECT id, vector FROM entries WHERE id BETWEEN ? AND ?",
                                           (int(part[0]), int(part[-1])))
                    for i, blob in rows:
                        k = pos.get(i)
                        if k is not None:
                            if not isinstance(blob, bytes) or len(blob) != 4 * self.dim:
                                raise sqlite3.DatabaseError(f"entry {i} holds a damaged vector")
                            vecs[k] = np.frombuffer(blob, dtype=np.float32)
                            got += 1
                if got != len(new):  # listed by the id index but missing from the table: damaged pages
                    raise sqlite3.DatabaseError(f"{len(new) - got} entries are listed but cannot be read")
        finally:
            self.db.execute("COMMIT")
        return gen, ids, new, vecs

    def _sync(self) -> bool:
        """Make the in-memory FAISS index hold exactly SQLite's entries (added and removed by id); True if it changed."""
        gen, ids, new, vecs = self._snapshot_ids(self._ids)
        gone = np.setdiff1d(self._ids, ids, assume_unique=True)
        if len(gone):
            self._faiss.remove_ids(gone)
        if len(new):
            self._faiss.add_with_ids(vecs, new)
        self._ids, self._synced = ids, gen
        return bool(len(gone) or len(new))

    def _rebuild_in_memory(self) -> None:
        gen, ids, _, vecs = self._snapshot_ids(np.zeros(0, dtype=np.int64))
        self._faiss, self.faiss_kind = build_faiss(vecs, ids, self.dim, exact_limit=EXACT_LIMIT,
                                                   approximate=self.approximate)
        self._ids, self._synced = ids, gen
        self._apply_nprobe()

    @_guarded
    def rebuild(self) -> None:
        """Rebuild the FAISS index from the SQLite record (kind chosen by size) and save it."""
        with self._locked():
            self._rebuild_in_memory()
            self._save_faiss()

    def _apply_nprobe(self, nprobe: int = DEFAULT_NPROBE) -> None:
        if hasattr(self._faiss, "nprobe"):
            self._faiss.nprobe = min(nprobe, self._faiss.nlist)

    def _save_faiss(self) -> None:
        import faiss

        try:
            with atomic_path(self.path / "vectors.faiss") as tmp:
                faiss.write_index(self._faiss, str(tmp))
            write_json_atomic(self.path / "vectors.json",
                              {"generation": self._synced, "kind": self.faiss_kind, "count": int(self._faiss.ntotal),
                               "index_id": self.settings.get("index_id")})
        except (OSError, RuntimeError) as exc:
            if not self.path.is_dir():
                raise IndexStoreError(f"the index folder {display(self.path)!r} no longer exists (deleted while in "
                                      "use?); run the command again to rebuild it") from None
            raise IndexStoreError(f"cannot save the search structure in {display(self.path)!r}: "
                                  f"{getattr(exc, 'strerror', None) or exc}. The SQLite record is intact; the next run "
                                  "rebuilds it.") from None
        self._saved_generation = self._synced

    def _settle(self) -> None:
        """After a write session: switch exact <-> approximate if the size crossed the limit, then save."""
        if self.faiss_kind != self._wanted_kind(self._faiss.ntotal):
            self._rebuild_in_memory()
            self._save_faiss()
        elif self._synced != self._saved_generation:
            self._save_faiss()

    def _refresh(self) -> None:
        """Pick up what other processes committed since we last looked (cheap when nothing changed)."""
        if self._depth == 0 and self.generation != self._synced:
            self._sync()

    # ------------------------------------------------------------------ contents
    def _count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    @_guarded
    def __len__(self) -> int:
        """Number of entries (files, or segments with `segment`)."""
        return self._count()

    @_guarded
    def files(self) -> list[dict]:
        """Indexed files with size, mtime, duration and number of entries."""
        rows = self.db.execute(
            "SELECT f.path, f.size, f.mtime_ns, f.duration, COUNT(e.id) FROM files f "
            "LEFT JOIN entries e ON e.file_id = f.id GROUP BY f.id").fetchall()
        out = [dict(path=from_db(r[0]), size=r[1], mtime_ns=r[2], duration=r[3], entries=r[4]) for r in rows]
        return sorted(out, key=lambda r: r["path"])

    def _known(self) -> dict[str, tuple[int, int, int, str | None]]:
        """path -> (file id, size, mtime_ns, head_sha256) of every indexed file."""
        return {from_db(r[0]): tuple(r[1:]) for r in
                self.db.execute("SELECT path, id, size, mtime_ns, head_sha256 FROM files")}

    def _remove_file(self, path: str) -> list[int] | None:
        """Delete a file's rows (inside a transaction); its entry ids, or None if it was not indexed."""
        row = self.db.execute("SELECT id FROM files WHERE path = ?", (to_db(path),)).fetchone()
        if row is None:
            return None
        ids = [r[0] for r in self.db.execute("SELECT id FROM entries WHERE file_id = ?", (row[0],))]
        self.db.execute("DELETE FROM entries WHERE file_id = ?", (row[0],))
        self.db.execute("DELETE FROM files WHERE id = ?", (row[0],))
        return ids

    def _bump(self) -> int:
        self.db.execute("UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
        return self.generation

    def _applied(self, gen: int, removed: Sequence[int] = (), added: np.ndarray | None = None,
                 vectors: np.ndarray | None = None) -> None:
        """Mirror one committed transaction (our own, under the lock) in the FAISS index."""
        if len(removed):
            gone = np.asarray(removed, dtype=np.int64)
            self._faiss.remove_ids(gone)
            self._ids = np.setdiff1d(self._ids, gone, assume_unique=True)
        if added is not None and len(added):
            self._faiss.add_with_ids(vectors, added)
            # new AUTOINCREMENT ids are above every id so far: appending keeps the array sorted
            self._ids = np.concatenate([self._ids, added]) if not len(self._ids) or added[0] > self._ids[-1] \
                else np.union1d(self._ids, added)
        self._synced = gen

    @_guarded
    def remove(self, paths: Iterable[str | os.PathLike]) -> list[str]:
        """Drop files (all their entries) from the index; returns those that were indexed."""
        removed = []
        with self._writing():
            for p in paths:
                path = _abspath(p)
                self._alive()
                with self._tx():
                    ids = self._remove_file(path)
                    gen = self._bump() if ids is not None else None
                if ids is not None:
                    self._applied(gen, ids)
                    removed.append(path)
        return removed

    # ------------------------------------------------------------------ adding
    def _needs_model(self, what: str):
        if self.model is None:
            raise IndexStoreError(f"{what} needs the index's model ({self.settings['model']} "
                                  f"[{self.settings['pretrained'] or 'random weights'}]); open the index with model=")
        return self.model

    @_guarded
    def add(self, inputs: Sequence[str | os.PathLike], *, batch_size: int = 4, workers: int = 2,
            progress: bool = False, prune: bool = False,
            on_progress: Callable[[int, int, str], None] | None = None,
            encode: Callable[..., Iterator] | None = None) -> UpdateReport:
        """Index new files, re-embed changed ones, skip unchanged ones. Directories are searched recursively.

        With `prune=True` (what `update` does), indexed files under the given directories (or given by
        name) that no longer exist are dropped, except under a root that is missing or holds no video
        file at all (an unplugged drive, a bare mount point): its entries are kept and a note says so.
        A new file with the size, mtime and first MiB of an indexed file that is gone is that file moved:
        its entries move with it instead of being embedded again. `on_progress(done, total, path)` is called
        after each file to embed (committed or failed); an index made with `captions=True` captions each entry.
        `encode` is the batch encoder (`tasks.batch.encode_files`, or a backend's `encode_files`).
        """
        model = self._needs_model("adding videos")
        report = UpdateReport()
        with self._writing():
            known = self._known()
            found = scan_inputs(inputs, prefer=lambda p: _abspath(p) in known)  # a file keeps its indexed name
            report.notes.extend(FileIssue(p, f"{display(p)!r}: skipped: {why}") for p, why in found.skipped)
            to_embed = self._plan(found, known, report, prune)
            self._drop(report.removed)
            self._move(report.moved)
            stats = {p: (size, mtime) for p, size, mtime in to_embed}
            done = 0
            if on_progress:
                on_progress(0, len(stats), "")
            for item in (encode or encode_files)(model, list(stats), num_frames=self.num_frames,
                                                 batch_size=batch_size, workers=workers, pooling=self.pooling,
                                                 segment=self.segment, progress=progress, desc="index",
                                                 captions=INDEX_CAPTIONS if self.captions else None,
                                                 **self._sampling_kw()):
                done += 1
                if isinstance(item, FileIssue):
                    report.failed.append(item)
                    if on_progress:
                        on_progress(done, len(stats), item.path)
                    continue
                path = item[0].clip.path
                self._commit_file(path, *stats[path], item, [x.caption for x in item] if self.captions else None)
                if on_progress:
                    on_progress(done, len(stats), path)
                (report.updated if path in known else report.added).append(path)
                cut = item[-1].clip  # a cut-off file is found out only when its last windows are read
                if cut.truncated_at is not None:
                    report.notes.append(FileIssue(path, f"{display(path)!r}: truncated: its data ends at "
                                                        f"{cut.truncated_at:.2f} s of a stated {cut.info.duration:.2f} s; "
                                                        "indexed up to there"))
        return report

    def _sampling_kw(self) -> dict:
        """The encoders' `sampling` keyword: none for uniform (so any batch encoder given as `encode` works)."""
        return {} if self.sampling == "uniform" else {"sampling": self.sampling}

    def _drop(self, paths: Sequence[str]) -> None:
        """Remove files that are gone, one transaction each."""
        for old in paths:
            self._alive()
            with self._tx():
                ids = self._remove_file(old) or []
                gen = self._bump()
            self._applied(gen, ids)

    def _move(self, moves: Sequence[tuple[str, str]]) -> None:
        """Give moved files their new path; their entries stay as they are."""
        for old, new in moves:
            self._alive()
            with self._tx():
                self.db.execute("UPDATE files SET path = ? WHERE path = ?", (to_db(new), to_db(old)))
                gen = self._bump()
            self._applied(gen)

    def _commit_file(self, path: str, size: int, mtime: int, items: list, captions: list[str] | None = None) -> None:
        """One whole file (its EncodedClips) in one transaction: see `_commit_entries`."""
        clip = items[-1].clip
        duration = clip.info.duration if clip.truncated_at is None else clip.truncated_at
        vecs = np.stack([F.normalize(x.embedding.float(), dim=-1).cpu().numpy() for x in items]).astype(np.float32)
        times = [x.clip.timestamps for x in items] if self.sampling == "keyframes" else None
        self._commit_entries(path, size, mtime, duration, [(x.clip.start, x.clip.end) for x in items], vecs, captions,
                             times)

    def _commit_entries(self, path: str, size: int, mtime: int, duration: float, windows: list[tuple[float, float]],
                        vecs: np.ndarray, captions: list[str] | None = None,
                        frame_times: list[list[float]] | None = None) -> None:
        """One whole file in one transaction: its old entries out, the new ones in (with their captions and the
        times of the frames used, where given), the generation bumped."""
        head = head_sha256(path)
        self._alive()
        with self._tx():
            old = self._remove_file(path) or []
            fid = self.db.execute("INSERT INTO files (path, size, mtime_ns, duration, indexed_at, head_sha256) "
                                  "VALUES (?, ?, ?, ?, ?, ?)",
                                  (to_db(path), size, mtime, duration, time.time(), head)).lastrowid
            new_ids = [self.db.execute("INSERT INTO entries (file_id, start, end, vector) VALUES (?, ?, ?, ?)",
                                       (fid, lo, hi, v.tobytes())).lastrowid
                       for (lo, hi), v in zip(windows, vecs)]
            if captions is not None:
                self.db.executemany("INSERT INTO captions (entry_id, text) VALUES (?, ?)", zip(new_ids, captions))
            if frame_times is not None:
                self.db.executemany("INSERT INTO frame_times (entry_id, times) VALUES (?, ?)",
                                    [(i, json.dumps([float(t) for t in ts])) for i, ts in zip(new_ids, frame_times)])
            gen = self._bump()
        self._applied(gen, old, np.asarray(new_ids, dtype=np.int64), vecs)

    def _plan(self, found, known: dict, report: UpdateReport, prune: bool) -> list[tuple[str, int, int]]:
        """Sort the scanned inputs into unchanged / to embed / moved / removed, and report problem inputs."""
        self._report_missing(found, known, report, prune)
        to_embed, seen = self._changed(found, known, report)
        still, taken = self._moved(to_embed, known, seen, report)
        if prune:
            self._pruned(found, known, seen | taken, report)
        return still

    @staticmethod
    def _report_missing(found, known: dict, report: UpdateReport, prune: bool) -> None:
        """Inputs that could not be listed: a deleted indexed file (removed when pruning), a missing or unreadable
        root (its indexed files kept), an empty directory."""
        for p, why in found.missing:
            root = _abspath(p)
            kept = _under(root, known)
            if prune and root in known and why == "no such file or directory":
                report.removed.append(root)  # an indexed file named by itself: it was deleted
            elif kept:
                what = ("the library root is missing (an unmounted drive?)" if why == "no such file or directory"
                        else "it cannot be looked at now")
                report.failed.append(FileIssue(p, f"{display(p)!r}: {why}: {what}; its {len(kept)} indexed files are "
                                                  "kept, and search leaves them out while they are missing"))
            else:
                report.failed.append(FileIssue(p, f"{display(p)!r}: {why}"))
        for p in found.empty_dirs:
            kept = _under(_abspath(p), known)
            extra = (f"; its {len(kept)} indexed files are kept (an empty mount point?)" if kept else "")
            report.failed.append(FileIssue(p, f"{display(p)!r}: directory holds no video files{extra}"))

    @staticmethod
    def _changed(found, known: dict, report: UpdateReport) -> tuple[list[tuple[str, int, int]], set[str]]:
        """((path, size, mtime) of files new or changed since indexed, every path found); unchanged ones reported."""
        to_embed: list[tuple[str, int, int]] = []
        seen: set[str] = set()
        for p in found.paths:
            path = _abspath(p)
            try:
                st = os.stat(path)
            except OSError as exc:
                report.failed.append(FileIssue(p, f"{display(p)!r}: {exc.strerror}"))
                continue
            seen.add(path)
            k = known.get(path)
            if k is not None and (k[1], k[2]) == (st.st_size, st.st_mtime_ns):
                report.unchanged.append(path)
            else:
                to_embed.append((path, st.st_size, st.st_mtime_ns))
        return to_embed, seen

    @staticmethod
    def _moved(to_embed: list[tuple[str, int, int]], known: dict, seen: set[str],
               report: UpdateReport) -> tuple[list[tuple[str, int, int]], set[str]]:
        """(files still to embed, old paths taken by a move): a new path whose size, mtime and first MiB equal
        those of an indexed file that is gone is that file moved (reported as (old, new))."""
        by_stat: dict[tuple[int, int], list[str]] = {}
        for path, (_, size, mtime, head) in known.items():
            if head is not None and path not in seen:
                by_stat.setdefault((size, mtime), []).append(path)
        still: list[tuple[str, int, int]] = []
        taken: set[str] = set()
        for path, size, mtime in to_embed:
            candidates = [] if path in known else by_stat.get((size, mtime), [])
            old = None
            if candidates:
                head = head_sha256(path)
                old = next((c for c in candidates if c not in taken and known[c][3] == head and _gone(c)), None)
            if old is None:
                still.append((path, size, mtime))
            else:
                taken.add(old)
                report.moved.append((old, path))
        return still, taken

    @staticmethod
    def _pruned(found, known: dict, accounted: set[str], report: UpdateReport) -> None:
        """Indexed files under the roots that are gone (and not found or moved: `accounted`) go to report.removed;
        never under what could not be looked at (a missing root, a folder that cannot be listed)."""
        unsure = [_abspath(p) for p, _ in found.missing] + [_abspath(p) for p in found.empty_dirs]
        removed = set(report.removed)
        for p in found.roots:
            for k in _under(_abspath(p), known):
                if k in accounted or k in removed or any(_under(u, [k]) for u in unsure):
                    continue
                if _gone(k):
                    removed.add(k)
                    report.removed.append(k)

    # ------------------------------------------------------------------ merging embeddings written by `embed`
    def _check_embeddings(self, path: Path, got: dict[str, str]) -> None:
        """Refuse an embedding file whose protocol is not this index's (model weights, frames, pooling, sampling,
        segment, captions), naming each difference."""
        s = self.settings
        want = {"fingerprint": s["fingerprint"], "frames": s["frames"], "pooling": s["pooling"],
                "sampling": s.get("sampling", "uniform"), "embed_dim": s["embed_dim"]}
        problems = [f"{k} {got.get(k)!r} (the index: {v!r})" for k, v in want.items() if got.get(k) != v]
        if float(got.get("segment") or 0) != float(s["segment"]):
            problems.append(f"segment {got.get('segment')!r} (the index: {s['segment']!r})")
        if self.captions and got.get("captions") != caption_setting(INDEX_CAPTIONS):
            problems.append("no captions decoded as the index does (greedy, 20 tokens: embed with captions)"
                            if "captions" not in got else "captions decoded otherwise than the index does "
                            "(greedy, 20 tokens)")
        if problems:
            raise IndexStoreError(f"{display(path)!r} does not match the index {display(self.path)!r}: it has "
                                  + "; ".join(problems) + ". Embed again with the index's settings, or index into "
                                  "a new path.")

    @_guarded
    def add_parquet(self, source: str | os.PathLike,
                    on_progress: Callable[[int, int, str], None] | None = None) -> UpdateReport:
        """Merge the embeddings `videococa embed` wrote (its .parquet file, or the ray backend's folder of shards):
        each file's rows become its entries (captions too in an index that keeps them), in one transaction per file.

        Every shard's protocol must be this index's (else IndexStoreError, before anything is written). A file
        indexed with its current size and mtime is left alone, so merging again (or after an interruption)
        only adds what is missing. A file that is not on this machine, or that changed after its shard was
        written, is reported and skipped: its rows no longer describe it. `on_progress(done, total, path)`
        is called after each shard."""
        import pyarrow.parquet as pq

        self._needs_model("adding videos")
        files = embedding_files(source)
        for f in files:  # every shard checked before any is merged
            self._check_embeddings(f, embedding_settings(f))
        report = UpdateReport()
        with self._writing():
            known = self._known()
            for n, f in enumerate(files):
                written = f.stat().st_mtime_ns
                for name, rows in _files_in(pq.ParquetFile(f), with_captions=self.captions,
                                            with_times=self.sampling == "keyframes"):
                    self._merge_file(name, rows, written, known, report)
                if on_progress:
                    on_progress(n + 1, len(files), str(f))
        return report

    def _merge_file(self, name: bytes, rows: dict[str, list], written: int, known: dict, report: UpdateReport) -> None:
        path = _abspath(os.fsdecode(name))
        try:
            st = os.stat(path)
        except OSError as exc:
            report.failed.append(FileIssue(path, f"{display(path)!r}: {exc.strerror}: its embeddings are not merged "
                                                 "(the index records files this machine can read)"))
            return
        k = known.get(path)
        if k is not None and (k[1], k[2]) == (st.st_size, st.st_mtime_ns):
            report.unchanged.append(path)
            return
        if st.st_mtime_ns > written:
            report.failed.append(FileIssue(path, f"{display(path)!r}: changed after its embeddings were written; "
                                                 "embed it again"))
            return
        vecs = np.asarray(rows["embedding"], dtype=np.float32)  # (R, E)
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        self._commit_entries(path, st.st_size, st.st_mtime_ns, rows["duration"][-1],
                             list(zip(rows["start"], rows["end"])), vecs, rows.get("caption"), rows.get("frame_times"))
        (report.updated if path in known else report.added).append(path)

    def update(self, inputs: Sequence[str | os.PathLike], **kwargs) -> UpdateReport:
        """`add`, and drop indexed files under `inputs` that no longer exist."""
        return self.add(inputs, prune=True, **kwargs)

    # ------------------------------------------------------------------ search
    def _query_vector(self, query: torch.Tensor | np.ndarray) -> np.ndarray:
        q = torch.as_tensor(query).float().reshape(1, -1).cpu().numpy().astype(np.float32)  # a copy
        if q.shape[1] != self.dim:
            raise OptionError(f"query has {q.shape[1]} dimensions; the index holds {self.dim}")
        q /= max(float(np.linalg.norm(q)), 1e-12)
        return q  # (1, E)

    def _allowed(self, where: SearchFilter | None, exclude: Sequence[int]) -> tuple[np.ndarray | None, np.ndarray]:
        """(entry ids a filtered search may return, None for all of them; entry ids it must not return).

        A filter that every file meets (a server's library root, typically) restricts nothing: it costs a count
        over the files, not a list of every entry id handed to FAISS."""
        excluded = np.asarray(sorted(set(int(i) for i in exclude)), dtype=np.int64)
        if where is None or where.empty:
            return None, excluded
        cond, args = where.sql("f")
        matching = self.db.execute(f"SELECT COUNT(*) FROM files f WHERE {cond}", args).fetchone()[0]
        if matching == self.db.execute("SELECT COUNT(*) FROM files").fetchone()[0]:
            return None, excluded
        ids = np.fromiter((r[0] for r in self.db.execute(
            f"SELECT e.id FROM entries e JOIN files f ON f.id = e.file_id WHERE {cond}", args)), dtype=np.int64)
        return (np.setdiff1d(ids, excluded) if len(excluded) else ids), np.zeros(0, dtype=np.int64)

    def _entry_rows(self, ids: Sequence[int]) -> dict[int, tuple]:
        """entry id -> (path, start, end, file id, caption), in chunks below SQLite's variable limit."""
        rows: dict[int, tuple] = {}
        for lo in range(0, len(ids), SQL_CHUNK):
            part = [int(i) for i in ids[lo : lo + SQL_CHUNK]]
            rows.update((r[0], (from_db(r[1]), *r[2:])) for r in self.db.execute(
                "SELECT e.id, f.path, e.start, e.end, f.id, c.text FROM entries e JOIN files f ON f.id = e.file_id "
                f"LEFT JOIN captions c ON c.entry_id = e.id WHERE e.id IN ({','.join('?' * len(part))})", part))
        return rows

    def _ranked(self, q: np.ndarray, allowed: np.ndarray | None,
                excluded: np.ndarray = np.zeros(0, dtype=np.int64)) -> Iterator[SearchHit]:
        """Every allowed (and not excluded) entry whose file still exists, best first; FAISS is asked for more as
        the caller reads on."""
        import faiss

        n = self._faiss.ntotal if allowed is None else len(allowed)
        params = None
        if allowed is not None or len(excluded):
            batch = faiss.IDSelectorBatch(allowed if allowed is not None else excluded)
            selector = batch if allowed is not None else faiss.IDSelectorNot(batch)
            selector.referenced = batch  # keep the wrapped selector alive as long as the outer one
            params = faiss.SearchParametersIVF(sel=selector, nprobe=self._faiss.nprobe) \
                if hasattr(self._faiss, "nprobe") else faiss.SearchParameters(sel=selector)
        exists: dict[str, bool] = {}
        k, seen = min(n, RERANK if self.faiss_kind == "ivfpq" else 64), 0
        while k:
            scores, ids = self._faiss.search(q, k, params=params)
            found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]
            new = found[seen:]
            if self.faiss_kind == "ivfpq":  # codes give approximate scores: the new candidates re-scored exactly
                new = self._rescored(q[0], [i for i, _ in new])
            rows = self._entry_rows([i for i, _ in new])
            for i, score in new:
                row = rows.get(i)
                if row is None:
                    continue  # removed since the FAISS index was synced
                if row[0] not in exists:
                    exists[row[0]] = os.path.exists(row[0])
                if exists[row[0]]:
                    yield SearchHit(row[0], row[1], row[2], score, i, row[3], row[4])
            seen = len(found)
            if k >= n or len(found) < k:  # all of them, or all an approximate index reaches
                return
            k = min(n, k * 4)

    def _rescored(self, q: np.ndarray, ids: list[int]) -> list[tuple[int, float]]:
        """(id, exact inner product with `q`) of the entries `ids`, best first, from SQLite's float32 vectors."""
        scored = []
        for lo in range(0, len(ids), SQL_CHUNK):
            part = ids[lo : lo + SQL_CHUNK]
            rows = self.db.execute(f"SELECT id, vector FROM entries WHERE id IN ({','.join('?' * len(part))})", part)
            scored += [(i, float(np.frombuffer(v, dtype=np.float32) @ q)) for i, v in rows]
        return sorted(scored, key=lambda x: -x[1])

    @staticmethod
    def _grouped(hits: Iterable[SearchHit], group_by: str, min_score: float | None, *,
                 by_score: bool = True) -> Iterator[SearchHit]:
        """Hits above `min_score` (or matching by caption), one per video with group_by='video'. `by_score`: the
        hits come in descending score, so the first one below the threshold ends the search."""
        videos: set[int | None] = set()
        for h in hits:
            if min_score is not None and h.score < min_score and not h.caption_match:
                if by_score:
                    return
                continue
            if group_by == "video":
                if h.video_id in videos:
                    continue
                videos.add(h.video_id)
            yield h

    def _check_page(self, top_k: int, offset: int, group_by: str) -> None:
        check_group_by(group_by)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise OptionError(f"top_k must be an integer of at least 1, got {top_k!r}")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise OptionError(f"offset must be a non-negative integer, got {offset!r}")

    @_guarded
    def search_embedding(self, query: torch.Tensor | np.ndarray, *, top_k: int = 10, offset: int = 0,
                         where: SearchFilter | None = None, group_by: GroupBy = "moment",
                         min_score: float | None = None, exclude: Sequence[int] = ()) -> list[SearchHit]:
        """Rank entries by cosine similarity to a (E,) embedding. Entries whose file is gone are left out.

        `offset` skips that many results (pages); `where` keeps entries whose file meets a SearchFilter;
        `group_by="video"` returns each file once, at its best entry; `min_score` stops at lower scores;
        `exclude` leaves out entry ids (the query entry of "more like this").
        """
        self._check_page(top_k, offset, group_by)
        q = self._query_vector(query)
        self._refresh()
        hits = self._ranked(q, *self._allowed(where, exclude))
        return page(self._grouped(hits, group_by, min_score), offset, top_k)

    def search(self, query: str | torch.Tensor, *, top_k: int = 10, hybrid: bool = True, **kwargs) -> list[SearchHit]:
        """Text -> video (a string) or embedding -> video (a tensor); options as `search_embedding`.

        On an index with captions, a text query also matches the captions' words (SQLite FTS5, bm25) and the
        two rankings are merged by reciprocal rank fusion (`hybrid=False`: embeddings only)."""
        if not isinstance(query, str):
            return self.search_embedding(query, top_k=top_k, **kwargs)
        if not query.strip():
            raise OptionError("the search query is empty")
        emb = self._needs_model("text search").encode_text([query])[0]
        if hybrid and self.captions and fts_query(query):
            return self.search_hybrid(query, emb, top_k=top_k, **kwargs)
        return self.search_embedding(emb, top_k=top_k, **kwargs)

    @_guarded
    def search_hybrid(self, text: str, emb: torch.Tensor | np.ndarray, *, top_k: int = 10, offset: int = 0,
                      where: SearchFilter | None = None, group_by: GroupBy = "moment", min_score: float | None = None,
                      exclude: Sequence[int] = ()) -> list[SearchHit]:
        """Text search with its embedding `emb` computed already: the embedding ranking and the ranking of the
        captions' words fused (RRF); scores stay cosine similarities. Without words: `search_embedding`."""
        if not fts_query(text):
            return self.search_embedding(emb, top_k=top_k, offset=offset, where=where, group_by=group_by,
                                         min_score=min_score, exclude=exclude)
        self._check_page(top_k, offset, group_by)
        q = self._query_vector(emb)
        self._refresh()
        depth = max(100, 4 * (offset + top_k))  # how far down each ranking the fusion looks
        vector = page(self._ranked(q, *self._allowed(where, exclude)), 0, depth)
        cond, args = (where or SearchFilter()).sql("f")
        words = [r[0] for r in self.db.execute(
            "SELECT t.rowid FROM captions_fts t JOIN entries e ON e.id = t.rowid JOIN files f ON f.id = e.file_id "
            f"WHERE captions_fts MATCH ? AND {cond} ORDER BY bm25(captions_fts) LIMIT ?",
            [fts_query(text), *args, depth])]
        if exclude:
            words = [i for i in words if i not in set(exclude)]
        by_id = {h.entry_id: h for h in vector}
        extra = [i for i in words if i not in by_id]
        if extra:
            vecs = {r[0]: np.frombuffer(r[1], dtype=np.float32) for lo in range(0, len(extra), SQL_CHUNK)
                    for r in self.db.execute(f"SELECT id, vector FROM entries WHERE id IN "
                                             f"({','.join('?' * len(extra[lo:lo + SQL_CHUNK]))})",
                                             extra[lo : lo + SQL_CHUNK])}
            for i, row in self._entry_rows(extra).items():
                if os.path.exists(row[0]):
                    by_id[i] = SearchHit(row[0], row[1], row[2], float(vecs[i] @ q[0]), i, row[3], row[4])
        matched = set(words)
        fused = [dataclasses.replace(by_id[i], caption_match=i in matched)
                 for i, _ in rrf([[h.entry_id for h in vector], words]) if i in by_id]
        return page(self._grouped(fused, group_by, min_score, by_score=False), offset, top_k)

    def search_video(self, video: str | os.PathLike, *, top_k: int = 10, **kwargs) -> list[SearchHit]:
        """Video -> video: the whole query video, read with the index's frames, sampling and pooling."""
        model = self._needs_model("video search")
        clip = model.read_video(video, self.num_frames, sampling=self.sampling)
        return self.search_embedding(model.encode_video(clip.frames[None], pooling=self.pooling)[0], top_k=top_k,
                                     **kwargs)

    @_guarded
    def search_entry(self, entry_id: int, *, top_k: int = 10, **kwargs) -> list[SearchHit]:
        """More like this: entries nearest to an indexed entry's embedding (the entry itself left out)."""
        vec = self.entry_vector(entry_id)
        if vec is None:
            raise IndexStoreError(f"no entry {entry_id} in the index {display(self.path)!r}")
        exclude = [*kwargs.pop("exclude", ()), entry_id]
        return self.search_embedding(vec, top_k=top_k, exclude=exclude, **kwargs)

    # ------------------------------------------------------------------ browsing
    @_guarded
    def entry_vector(self, entry_id: int) -> np.ndarray | None:
        """The stored (E,) embedding of an entry, or None if there is no such entry."""
        row = self.db.execute("SELECT vector FROM entries WHERE id = ?", (int(entry_id),)).fetchone()
        return None if row is None else np.frombuffer(row[0], dtype=np.float32).copy()

    @_guarded
    def entry(self, entry_id: int) -> SearchHit | None:
        """An entry as a hit (score 1.0), or None if there is no such entry."""
        row = self._entry_rows([int(entry_id)]).get(int(entry_id))
        return None if row is None else SearchHit(row[0], row[1], row[2], 1.0, int(entry_id), row[3], row[4])

    _VIDEO_SQL = ("SELECT f.id, f.path, f.size, f.mtime_ns, f.duration, f.indexed_at, "
                  "(SELECT COUNT(*) FROM entries e WHERE e.file_id = f.id) FROM files f")

    @_guarded
    def video(self, video_id: int) -> VideoRecord | None:
        """One indexed file by id, or None."""
        row = self.db.execute(f"{self._VIDEO_SQL} WHERE f.id = ?", (int(video_id),)).fetchone()
        return None if row is None else VideoRecord(row[0], from_db(row[1]), *row[2:])

    @_guarded
    def videos(self, *, offset: int = 0, limit: int = 50, where: SearchFilter | None = None) -> tuple[list[VideoRecord], int]:
        """(a page of indexed files ordered by path, how many match in all)."""
        self._check_page(limit, offset, "moment")
        cond, args = (where or SearchFilter()).sql("f")
        total = self.db.execute(f"SELECT COUNT(*) FROM files f WHERE {cond}", args).fetchone()[0]
        rows = self.db.execute(f"{self._VIDEO_SQL} WHERE {cond} ORDER BY f.path LIMIT ? OFFSET ?",
                               [*args, limit, offset]).fetchall()
        return [VideoRecord(r[0], from_db(r[1]), *r[2:]) for r in rows], total

    @_guarded
    def all_videos(self) -> Iterator[VideoRecord]:
        """Every indexed file (without entry counts: `entries` is 0), in id order; cheap for large indexes."""
        for r in self.db.execute("SELECT id, path, size, mtime_ns, duration, indexed_at FROM files ORDER BY id").fetchall():
            yield VideoRecord(r[0], from_db(r[1]), *r[2:], 0)

    @_guarded
    def segments(self, video_id: int) -> list[Segment]:
        """A file's entries in time order, with their captions (and frame times, in a keyframes index)."""
        times = "t.times" if self.sampling == "keyframes" else "NULL"
        join = "LEFT JOIN frame_times t ON t.entry_id = e.id" if self.sampling == "keyframes" else ""
        return [Segment(*r[:4], None if r[4] is None else json.loads(r[4])) for r in self.db.execute(
            f"SELECT e.id, e.start, e.end, c.text, {times} FROM entries e LEFT JOIN captions c ON c.entry_id = e.id "
            f"{join} WHERE e.file_id = ? ORDER BY e.start, e.id", (int(video_id),))]

    @_guarded
    def stats(self) -> dict:
        """Counts, the model and settings that made the index, its FAISS kind and when it last changed."""
        self._refresh()
        files, last = self.db.execute("SELECT COUNT(*), MAX(indexed_at) FROM files").fetchone()
        keys = ("model", "pretrained", "precision", "fingerprint", "frames", "pooling", "segment", "created")
        return {"sampling": self.sampling, "videos": files, "entries": self._count(), "index_kind": self.faiss_kind,
                "faiss": self.approximate, "last_update": last, "generation": self.generation, "captions": self.captions,
                **{k: self.settings.get(k) for k in keys}}

    # ------------------------------------------------------------------ repair
    @classmethod
    def repair(cls, path: str | os.PathLike, model=None, *, on_wait=None) -> RepairReport:
        """Salvage a damaged index: copy every readable file (with all its entries) into a new record.

        The new record is written first; only then is the damaged database moved aside
        (`index.sqlite.damaged-<time>`) and the new one put in its place, so a failure (a full disk) leaves
        the index as it was. The FAISS file is rebuilt. Files with an unreadable or incomplete set of
        entries are dropped, so the next `index` run embeds them again. If even the settings are lost
        (e.g. a 0-byte file), the index starts empty: with `model` it is created anew with that model.
        """
        root = Path(path)
        db_path = root / "index.sqlite"
        if not root.is_dir():
            raise IndexStoreError(f"no video index at {display(root)!r} to repair")
        report = RepairReport()
        lock = FileLock(root / "index.lock")
        try:
            lock.acquire(on_wait=lambda pid: (on_wait or _say_waiting)(root, pid))
        except OSError as exc:
            raise IndexStoreError(f"cannot repair {display(root)!r}: {exc.strerror or exc}") from None
        new = db_path.with_name("index.sqlite.repair.part")
        try:
            salvaged = _salvage(db_path) if db_path.is_file() else None
            if salvaged is not None:
                _write_salvage(new, *salvaged, report)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            if db_path.is_file():
                report.damaged_copy = str(db_path.with_name(f"index.sqlite.damaged-{stamp}"))
                os.replace(db_path, report.damaged_copy)
                for extra in ("-wal", "-shm"):
                    side = db_path.with_name("index.sqlite" + extra)
                    if side.exists():
                        os.replace(side, report.damaged_copy + extra)
            if salvaged is None:
                report.fresh = True
            else:
                os.replace(new, db_path)
            for derived in ("vectors.faiss", "vectors.json"):
                (root / derived).unlink(missing_ok=True)
        except (OSError, sqlite3.DatabaseError) as exc:
            full = isinstance(exc, sqlite3.DatabaseError) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            why = "the disk is full" if full else (getattr(exc, "strerror", None) or str(exc))
            raise IndexStoreError(f"cannot repair {display(root)!r}: {why}; the index was left as it was") from None
        finally:
            new.unlink(missing_ok=True)
            lock.release()
        if report.fresh and model is None:
            return report
        with cls(root, model, on_wait=on_wait):  # rebuilds vectors.faiss from the new record
            pass
        return report

    @classmethod
    def recorded_settings(cls, path: str | os.PathLike) -> dict[str, str]:
        """The settings an existing index records (which model to load for it); IndexStoreError if there is none."""
        with cls(path, create=False) as probe:
            return dict(probe.settings)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "VideoIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _files_in(parquet, *, with_captions: bool, with_times: bool = False) -> Iterator[tuple[bytes, dict[str, list]]]:
    """(path_bytes, its columns) per file of an embedding file, whose rows of one file are consecutive (both
    writers write whole files), read a row group at a time."""
    cols = ["path_bytes", "start", "end", "duration", "embedding"] + (["caption"] if with_captions else []) \
        + (["frame_times"] if with_times else [])
    name, rows = None, None
    for batch in parquet.iter_batches(columns=cols):
        data = batch.to_pydict()
        for i, b in enumerate(data["path_bytes"]):
            if b != name:
                if rows is not None:
                    yield name, rows
                name, rows = b, {c: [] for c in cols[1:]}
            for c in cols[1:]:
                rows[c].append(data[c][i])
    if rows is not None:
        yield name, rows


def _salvage(db_path: Path):
    """(settings, files, entries, last entry id used) readable from a damaged database, or None if its
    settings are lost."""
    try:
        db = sqlite3.connect(f"file:{urllib.parse.quote(str(db_path))}?mode=ro", uri=True)
    except sqlite3.DatabaseError:
        return None
    try:
        try:
            settings = dict(db.execute("SELECT key, value FROM settings").fetchall())
        except sqlite3.DatabaseError:
            return None
        if any(k not in settings for k in _REQUIRED):
            return None
        try:
            if int(settings["embed_dim"]) < 1:
                return None
            check_segment(float(settings["segment"]) or None)
        except ValueError:
            return None  # settings that cannot be used: nothing to salvage into
        cols = [r[1] for r in db.execute("PRAGMA table_info(files)")] if settings else []
        head = "head_sha256" if "head_sha256" in cols else "NULL"
        files = _rows(db, f"SELECT id, path, size, mtime_ns, duration, indexed_at, {head} FROM files", "files")
        entries = _rows(db, "SELECT id, file_id, start, end, vector FROM entries", "entries")
        try:
            captions = db.execute("SELECT entry_id, text FROM captions").fetchall()
        except sqlite3.DatabaseError:
            captions = []  # none stored, or unreadable: the files stay, without captions
        try:
            times = db.execute("SELECT entry_id, times FROM frame_times").fetchall()
        except sqlite3.DatabaseError:
            times = []  # none stored (uniform, or an index older than the table), or unreadable
        try:
            last = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'entries'").fetchone()
        except sqlite3.DatabaseError:
            last = None
        return settings, files, entries, max([last[0] if last else 0] + [e[0] for e in entries]), captions, times
    finally:
        db.close()


def _rows(db: sqlite3.Connection, select: str, table: str) -> list[tuple]:
    """All readable rows of `table`: in one go, else by id ranges, else one id at a time."""
    try:
        return db.execute(select).fetchall()
    except sqlite3.DatabaseError:
        pass
    try:
        top = db.execute(f"SELECT max(id) FROM {table}").fetchone()[0] or 0
    except sqlite3.DatabaseError:
        top = 10_000_000
    out: list[tuple] = []
    step = 1000
    for lo in range(1, top + 1, step):
        try:
            out += db.execute(f"{select} WHERE id BETWEEN ? AND ?", (lo, lo + step - 1)).fetchall()
        except sqlite3.DatabaseError:
            for i in range(lo, lo + step):
                try:
                    out += db.execute(f"{select} WHERE id = ?", (i,)).fetchall()
                except sqlite3.DatabaseError:
                    continue
    return out


def _write_salvage(new: Path, settings: dict, files: list, entries: list, last_id: int, captions: list,
                   times: list, report: RepairReport) -> None:
    """A new database at `new` from salvaged rows, keeping only files whose entries are all there."""
    segment = float(settings.get("segment", 0) or 0)
    dim = int(settings["embed_dim"])
    by_file: dict[int, list[tuple]] = {}
    for e in entries:
        if isinstance(e[4], bytes) and len(e[4]) == 4 * dim:
            by_file.setdefault(e[1], []).append(e)
    keep_files, keep_entries = [], []
    for f in files:
        have = by_file.get(f[0], [])
        try:
            want = len(clip_windows(f[4], segment=segment)) if segment and f[4] > 0 else 1
        except ValueError:
            want = -1  # a damaged duration
        if len(have) == want:
            keep_files.append(f)
            keep_entries += have
        else:
            report.files_dropped.append(from_db(f[1]))
    new.unlink(missing_ok=True)
    db = sqlite3.connect(new, isolation_level=None)
    try:
        db.executescript(_SCHEMA)
        db.execute("BEGIN")
        settings = {**settings, "schema_version": str(SCHEMA_VERSION), "index_id": uuid.uuid4().hex,
                    "generation": str(int(settings.get("generation", 0)) + 1)}
        db.executemany("INSERT INTO settings VALUES (?, ?)", list(settings.items()))
        db.executemany("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?)", keep_files)
        db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?)", keep_entries)
        kept = {e[0] for e in keep_entries}
        db.executemany("INSERT INTO captions (entry_id, text) VALUES (?, ?)",
                       [c for c in captions if c[0] in kept and isinstance(c[1], str)])
        db.executemany("INSERT INTO frame_times (entry_id, times) VALUES (?, ?)",
                       [t for t in times if t[0] in kept and isinstance(t[1], str)])
        if last_id:  # ids are never reused, also those of entries that were lost
            if db.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'entries'", (last_id,)).rowcount == 0:
                db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('entries', ?)", (last_id,))
        db.execute("COMMIT")
    finally:
        db.close()
    report.files_kept, report.entries_kept = len(keep_files), len(keep_entries)


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
                seed: int = 0, approximate: str = "ivf") -> tuple[object, str]:
    """(index, kind): exact IndexIDMap2(IndexFlatIP) below `exact_limit` vectors, else the `approximate` inverted-file
    index (inner product): IndexIVFFlat (`ivf`) or IndexIVFPQ (`ivfpq`), trained on a sample of `vectors`."""
    import faiss

    n = len(vectors)
    if n < exact_limit:
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        kind = "exact"
    else:
        nlist = int(2 ** round(math.log2(4 * math.sqrt(n))))  # 4*sqrt(n), to a power of two: 4096 at 1M
        if approximate == "ivfpq":
            index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, pq_code_bytes(dim), 8,
                                     faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        # FAISS asks >= 39 points per list, and per PQ centroid (256 of them)
        sample = vectors[rng.choice(n, size=min(n, max(40 * nlist, 40 * 256)), replace=False)]
        index.cp.seed = seed
        if approximate == "ivfpq":
            index.pq.cp.seed = seed
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        kind = approximate
    if n:
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
    return index, kind


def pq_code_bytes(dim: int) -> int:
    """Bytes of an ivfpq code for `dim`-dimensional vectors: dim / PQ_DIMS_PER_CODE_BYTE, or the nearest divisor of
    `dim` below it (FAISS splits the vector into that many equal sub-vectors)."""
    m = max(1, dim // PQ_DIMS_PER_CODE_BYTE)
    while dim % m:
        m -= 1
    return m
