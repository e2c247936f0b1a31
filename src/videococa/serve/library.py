"""What the routes call: one index, one model engine, the job runner and the media cache, with the rules
that keep clients inside the library (ids only, paths checked under the root)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import IndexStoreError, OptionError, VideoCoCaError
from ..index import SearchFilter, SearchHit, VideoIndex, VideoRecord
from ..models.videococa import VideoCoCa
from ..tasks import ZeroShotClassifier
from .engine import Engine
from .jobs import Job, JobRunner
from .media import MediaCache, inside
from .settings import ServeSettings


class NotFound(VideoCoCaError):
    """A video, entry or job id that does not exist (HTTP 404)."""


class Forbidden(VideoCoCaError):
    """A request the server refuses by its settings (HTTP 403)."""


class Library:
    """The served library: searches, browsing, model calls and jobs over one index."""

    def __init__(self, index: VideoIndex, model: VideoCoCa, settings: ServeSettings):
        self.index = index
        self.model = model
        self.settings = settings
        self.root = str(settings.library) if settings.library else None
        self.lock = threading.RLock()  # one thread at a time on the reader's SQLite connection and FAISS copy
        self.engine = Engine(model)
        self.jobs = JobRunner()
        self.cache = MediaCache(settings.cache_dir)
        self._classifiers: OrderedDict[tuple, ZeroShotClassifier] = OrderedDict()
        self._outside: dict[int, tuple[str, bool]] = {}  # file id -> (path, lies outside the root after links)
        self._outside_gen = -1
        self._outside_ids: frozenset[int] = frozenset()

    def close(self) -> None:
        self.jobs.close()
        self.engine.close()

    @contextlib.contextmanager
    def reading(self):
        with self.lock:
            yield self.index

    # ------------------------------------------------------------------ paths and ids
    def rel(self, path: str) -> str:
        """A path as clients see it: relative to the library root."""
        return os.path.relpath(path, self.root) if self.root else os.path.basename(path)

    def served(self, path: str) -> str | None:
        """The real path of an indexed file, only if it lies inside the library root (after links)."""
        return inside(self.root, path) if self.root else None

    def video(self, video_id: int) -> tuple[VideoRecord, str]:
        """(record, real path) of an indexed video that may be served; NotFound otherwise."""
        with self.reading() as index:
            rec = index.video(video_id)
        real = self.served(rec.path) if rec is not None else None
        if rec is None or real is None or not os.path.isfile(real):
            raise NotFound(f"no video {video_id} in this library")
        return rec, real

    def outside(self) -> frozenset[int]:
        """Ids of indexed files that resolve outside the library root (links out of it): never listed or served.
        Checked once per file (again only if its path changes), as the index grows."""
        with self.reading() as index:
            if index.generation != self._outside_gen:
                self._outside_gen = index.generation
                rows = {v.id: v.path for v in index.all_videos()}
                self._outside = {i: (p, self._outside[i][1] if self._outside.get(i, ("",))[0] == p
                                     else self.served(p) is None) for i, p in rows.items()}
                self._outside_ids = frozenset(i for i, (_, out) in self._outside.items() if out)
        return self._outside_ids

    def root_filter(self, prefix: str | None = None, glob: str | None = None, **ranges) -> SearchFilter:
        """A SearchFilter whose path conditions are relative to the library root (and never leave it)."""
        base = (self.root or "").rstrip(os.sep) + os.sep
        for name, value in (("path_prefix", prefix), ("path_glob", glob)):
            if value is not None and (value.startswith(("/", "\\")) or ".." in Path(value).parts):
                raise OptionError(f"{name} {value!r} must be relative to the library root, without '..'")
        return SearchFilter(path_prefix=base + (prefix or ""), path_glob=base + glob if glob else None,
                            exclude_videos=self.outside(), **ranges)

    # ------------------------------------------------------------------ search
    def embed_query(self, *, text: str | None = None, entry_id: int | None = None,
                    upload: str | None = None) -> np.ndarray:
        """The (E,) query embedding of a text, an indexed entry, or an uploaded image or clip."""
        if text is not None:
            return self.engine.encode_text(text).result()
        if entry_id is not None:
            with self.reading() as index:
                vec = index.entry_vector(entry_id)
            if vec is None:
                raise NotFound(f"no entry {entry_id} in this library")
            return vec
        assert upload is not None
        frames, pooling = self.index.num_frames, self.index.pooling
        return self.engine.call(lambda m: m.encode_video(m.read_video(upload, frames).frames[None],
                                                         pooling=pooling)[0].cpu().numpy()).result()

    def search(self, q: np.ndarray, *, text: str | None, top_k: int, offset: int, exclude=(), hybrid: bool = True,
               **options) -> tuple[list[SearchHit], bool]:
        """(hits, whether more follow): one page, one more looked up to know if another page exists."""
        with self.reading() as index:
            if text is not None and hybrid and index.captions:
                hits = index.search_hybrid(text, q, top_k=top_k + 1, offset=offset, exclude=exclude, **options)
            else:
                hits = index.search_embedding(q, top_k=top_k + 1, offset=offset, exclude=exclude, **options)
        return hits[:top_k], len(hits) > top_k

    # ------------------------------------------------------------------ model calls on a moment
    def caption(self, path: str, start: float | None, end: float | None, **decoding) -> str:
        frames = self.index.num_frames
        return self.engine.call(lambda m: m.generate(m.read_video(path, frames, start=start, end=end).frames[None],
                                                     **decoding)[0]).result()

    def ask(self, path: str, question: str, start: float | None, end: float | None) -> str:
        frames = self.index.num_frames
        return self.engine.call(lambda m: m.answer(m.read_video(path, frames, start=start, end=end).frames[None],
                                                   question)[0]).result()

    def classify(self, labels: Any, q: np.ndarray, top_k: int) -> list[dict]:
        key = (labels,) if isinstance(labels, str) else tuple(labels)

        def run(model):
            clf = self._classifiers.get(key)
            if clf is None:
                clf = self._classifiers[key] = ZeroShotClassifier(model, labels)
                while len(self._classifiers) > 16:
                    self._classifiers.popitem(last=False)
            preds = clf.classify(torch.from_numpy(np.asarray(q, dtype=np.float32))[None], top_k=top_k)[0]
            return [{"label": p.label, "score": round(float(p.score), 6)} for p in preds]

        return self.engine.call(run).result()

    # ------------------------------------------------------------------ jobs
    def _writer(self) -> VideoIndex:
        return VideoIndex(self.index.path, self.model, create=False)

    def start_update(self, paths: list[str] | None = None, kind: str = "update") -> Job:
        """Rescan the library (or index the given files) in the background."""
        self.writable()
        targets = paths or [self.root]

        def work(job: Job, update) -> dict:
            with self._writer() as index:
                report = index.add(targets, prune=paths is None, on_progress=lambda d, t, p: update(
                    done=d, total=t, current=self.rel(p) if p else ""))
            return {"added": len(report.added), "updated": len(report.updated), "unchanged": len(report.unchanged),
                    "moved": len(report.moved), "removed": len(report.removed), "failed": len(report.failed),
                    "failures": [{"path": self.rel(f.path), "reason": f.reason} for f in report.failed[:50]]}

        return self.jobs.submit(kind, work)

    def start_delete(self, video_id: int) -> Job:
        """Remove a video from the index and delete its file, in the background (after any running job)."""
        self.writable()
        rec, real = self.video(video_id)

        def work(job: Job, update) -> dict:
            update(total=1, current=self.rel(rec.path))
            with self._writer() as index:
                removed = index.remove([rec.path])
            with contextlib.suppress(FileNotFoundError):
                os.unlink(real)
            update(done=1)
            return {"removed": len(removed)}

        return self.jobs.submit("delete", work)

    def writable(self) -> None:
        if self.settings.read_only:
            raise Forbidden("this server is read-only (--read-only): uploads, rescans and deletions are refused")
        if self.root is None:
            raise Forbidden("this server has no library folder (--library), so it cannot change the index")

    def stats(self) -> dict:
        with self.reading() as index:
            s = {**index.stats(), "frames": index.num_frames, "segment": index.segment}  # numbers, not the stored text
        job = self.jobs.running()
        return {**s, "library": os.path.basename(self.root or "") or self.root, "read_only": self.settings.read_only,
                "job": job.public() if job else None, "auth": self.settings.auth}


# ---------------------------------------------------------------------- cursors
def encode_cursor(offset: int, query: dict) -> str:
    """An opaque page cursor: the offset, bound to the query it pages through."""
    raw = json.dumps({"o": offset, "q": _fingerprint(query)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, query: dict) -> int:
    if not cursor:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        offset, fp = int(data["o"]), data["q"]
    except (ValueError, KeyError, TypeError):
        raise OptionError(f"cursor {cursor[:40]!r} is not one this server gave out") from None
    if fp != _fingerprint(query) or offset < 0:
        raise OptionError("the cursor belongs to another query: send the same query with it, or drop it")
    return offset


def _fingerprint(query: dict) -> str:
    return hashlib.sha256(json.dumps(query, sort_keys=True, default=str).encode()).hexdigest()[:16]
