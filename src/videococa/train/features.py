"""A cache of frozen per-frame encoder tokens, so finetuning never runs the image encoder again.

Layout of a cache directory:
    manifest.json        model name, tag, weight fingerprint, frames, sampling, token shape
    index.sqlite         one row per clip: key, shard file, sha256 of its fp16 tokens
    shard-NNNNN.safetensors   up to `shard_size` clips each, tokens (T, N, W) in fp16

Shards are written atomically (temp file + rename) before their rows are committed, so an
interrupted run keeps every committed shard and a re-run continues with the clips not yet cached.
Loading verifies each clip's checksum and refuses a cache made with another model or frame count.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from ..deprecation import renamed_attribute, renamed_keywords
from ..errors import FeatureCacheError
from ..files import load_tensors, save_tensors_atomic, write_json_atomic
from ..models.videococa import VideoCoCa
from ..tasks.clipkeys import ClipKey, ClipKeyEncoder, encode_clip_keys

FORMAT_VERSION = 1


def clip_key(path: str, start: float | None = None, end: float | None = None) -> str:
    """The cache key of a clip: absolute path and window."""
    return f"{os.path.abspath(path)}|{'' if start is None else start}|{'' if end is None else end}"


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


@dataclass
class CacheReport:
    """What a cache-features run did."""

    cached: int = 0
    """Clips encoded and stored by this run."""
    skipped: int = 0
    """Clips already in the cache."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(path, reason) of clips that could not be read."""


class FeatureCache:
    """Open a feature cache; with `model`/`num_frames`, check it was made with them."""

    @renamed_keywords(frames="num_frames")
    def __init__(self, path: str | os.PathLike, model: VideoCoCa | None = None, num_frames: int | None = None):
        self.path = Path(path)
        mpath = self.path / "manifest.json"
        if not mpath.is_file():
            raise FeatureCacheError(f"no feature cache at {str(self.path)!r} (expected {str(mpath)!r}); "
                                    "make one with `videococa cache-features`")
        self.manifest = json.loads(mpath.read_text())
        problems = []
        if model is not None and model.fingerprint() != self.manifest["fingerprint"]:
            problems.append(f"it was made with {self.manifest['model']} [{self.manifest['pretrained'] or 'random'}] "
                            f"(weights {self.manifest['fingerprint']}), not {model.info.name} "
                            f"[{model.info.pretrained or 'random'}] (weights {model.fingerprint()})")
        if num_frames is not None and num_frames != self.manifest["frames"]:
            problems.append(f"it holds {self.manifest['frames']} frames per clip, not {num_frames}")
        if problems:
            raise FeatureCacheError(f"feature cache {str(self.path)!r} does not match: " + "; ".join(problems))
        self.db = sqlite3.connect(self.path / "index.sqlite")
        self._rows = {k: (s, h) for k, s, h in self.db.execute("SELECT key, shard, sha256 FROM clips")}
        self._shards: dict[str, dict[str, torch.Tensor]] = {}

    @property
    def num_frames(self) -> int:
        """Frames per clip the cache holds (the manifest's "frames")."""
        return int(self.manifest["frames"])

    frames = renamed_attribute("frames", "num_frames")

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def lookup(self, clip: tuple[str, float | None, float | None]) -> torch.Tensor | None:
        """(T, N, W) tokens of a (path, start, end) clip, or None if it is not cached."""
        key = clip_key(*clip)
        return self.get(key) if key in self._rows else None

    def get(self, key: str) -> torch.Tensor:
        """(T, N, W) fp16 tokens of a clip, checksum verified."""
        if key not in self._rows:
            raise KeyError(key)
        shard, sha = self._rows[key]
        if shard not in self._shards:
            try:
                self._shards[shard] = load_tensors(self.path / shard)[0]
            except Exception as exc:  # noqa: BLE001
                raise FeatureCacheError(f"feature cache shard {str(self.path / shard)!r} cannot be read: {exc}") from None
        t = self._shards[shard][hashlib.sha1(key.encode()).hexdigest()]
        if _sha(t) != sha:
            raise FeatureCacheError(f"feature cache {str(self.path)!r}: clip {key!r} fails its checksum (damaged shard {shard})")
        return t


@renamed_keywords(frames="num_frames")
def cache_features(model: VideoCoCa, clips: Sequence[ClipKey], out: str | os.PathLike, *, num_frames: int = 8,
                   shard_size: int = 256, batch_size: int = 8, workers: int = 2, progress: bool = False,
                   encode: ClipKeyEncoder = encode_clip_keys) -> CacheReport:
    """Encode each (path, start, end) clip once with the frozen encoder and store its tokens (resumable).

    `encode`: where the clips are read and encoded (`tasks.clipkeys`): this process's threads by default, or a
    backend's `encode_clip_keys` (`videococa.backends`, e.g. a Ray cluster's); the cache it writes is the same.
    Reading uses `workers` threads on the local path."""
    out = Path(out)
    db = _open_for_writing(out, model, num_frames)
    report = CacheReport()
    to_cache = _clips_to_cache(clips, {r[0] for r in db.execute("SELECT key FROM clips")}, report)
    shards = _ShardWriter(out, db, report)
    try:
        for batch in encode(model, [(p, s, e) for _, p, s, e in to_cache], num_frames=num_frames, output="frames",
                            batch_size=batch_size, workers=workers, progress=progress):
            report.failed += [(to_cache[i][1], reason) for i, reason in batch.failed]
            for i, tokens in zip(batch.ix, batch.frame_tokens if batch.ix else []):  # (T, N, W) fp16 each
                shards.add(to_cache[i][0], tokens)
            if len(shards.pending) >= shard_size:
                shards.flush()
    finally:
        shards.flush()  # also on Ctrl-C: what was encoded is kept
        db.close()
    return report


def _open_for_writing(out: Path, model: VideoCoCa, num_frames: int) -> sqlite3.Connection:
    """The cache's index database, after writing a new cache's manifest or checking an existing one's."""
    out.mkdir(parents=True, exist_ok=True)
    mpath = out / "manifest.json"
    manifest = {"version": FORMAT_VERSION, **model.provenance(frames=num_frames)}  # key "frames" as before
    if mpath.is_file():
        FeatureCache(out, model, num_frames).db.close()  # refuses a mismatched cache before any work
    else:
        write_json_atomic(mpath, manifest, indent=1)
    db = sqlite3.connect(out / "index.sqlite", isolation_level=None)
    db.execute("CREATE TABLE IF NOT EXISTS clips (key TEXT PRIMARY KEY, shard TEXT NOT NULL, sha256 TEXT NOT NULL)")
    return db


def _clips_to_cache(clips: Sequence[tuple[str, float | None, float | None]], done: set[str],
                    report: CacheReport) -> list[tuple[str, str, float | None, float | None]]:
    """(key, path, start, end) of each clip not yet cached, once each; cached ones are counted as skipped."""
    to_cache, queued = [], set()
    for p, s, e in clips:
        k = clip_key(p, s, e)
        if k in done:
            report.skipped += 1
        elif k not in queued:
            queued.add(k)
            to_cache.append((k, p, s, e))
    return to_cache


class _ShardWriter:
    """Encoded clips waiting to be written as one shard: the shard file first (atomically), then its rows in
    one transaction, so a committed row always has its shard."""

    def __init__(self, out: Path, db: sqlite3.Connection, report: CacheReport):
        self.out, self.db, self.report = out, db, report
        self.count = len({r[0] for r in db.execute("SELECT shard FROM clips")})
        self.pending: dict[str, tuple[str, torch.Tensor]] = {}
        """key -> (sha256, fp16 tokens (T, N, W)) of the clips not yet written."""

    def add(self, key: str, frame_tokens: torch.Tensor) -> None:
        t = frame_tokens.contiguous()
        self.pending[key] = (_sha(t), t)

    def flush(self) -> None:
        if not self.pending:
            return
        name = f"shard-{self.count:05d}.safetensors"
        while (self.out / name).exists():  # a shard from an interrupted run whose rows never committed
            self.count += 1
            name = f"shard-{self.count:05d}.safetensors"
        save_tensors_atomic(self.out / name, {hashlib.sha1(k.encode()).hexdigest(): t
                                              for k, (_, t) in self.pending.items()})
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR REPLACE INTO clips VALUES (?, ?, ?)",
                            [(k, name, h) for k, (h, _) in self.pending.items()])
        self.db.execute("COMMIT")
        self.report.cached += len(self.pending)
        self.pending.clear()
        self.count += 1
