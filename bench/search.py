"""Search latency and recall of the video index at 10k, 100k and 1M entries (512-d embeddings).

Goes through the real index: entries are written to an index's SQLite record, VideoIndex opens it and
builds its FAISS structure (kind chosen by size, as in use), and each query runs `search_embedding`
(FAISS search + SQLite lookup of path and times). Recall@10 is against exact inner-product search.

Two kinds of data, side by side:
  random    isotropic Gaussian vectors, normalised: no neighbourhood structure at all, the worst case
            for any partitioning index (every point is about equally far from every other).
  clustered a mixture of 1000 Gaussians (cos(point, its centre) ~ 0.7), normalised: the structure real
            video embeddings have (near-duplicates, scenes, topics).

Target (issue 6): p50 < 20 ms with recall@10 >= 0.95 at 1M.

    .venv/bin/python bench/search.py [--sizes 10000 100000 1000000] [--queries 200]
"""

from __future__ import annotations

import argparse
import math
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import header

from videococa.index import store

DIM = 512


def data(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "random":
        x = rng.standard_normal((n, DIM), dtype=np.float32)
    else:
        centres = np.random.default_rng(12345).standard_normal((1000, DIM), dtype=np.float32)
        x = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def write_index(path: Path, vectors: np.ndarray) -> None:
    """An index directory whose SQLite record holds `vectors` as one-entry files."""
    path.mkdir(parents=True)
    db = sqlite3.connect(path / "index.sqlite", isolation_level=None)
    db.executescript(store._SCHEMA)
    settings = {"schema_version": store.SCHEMA_VERSION, "model": "bench", "pretrained": "", "precision": "fp32",
                "fingerprint": "bench", "embed_dim": DIM, "frames": 8, "sampling": "uniform",
                "pooling": "attentional", "segment": 0, "created": "", "videococa": "", "generation": 1}
    db.execute("BEGIN")
    db.executemany("INSERT INTO settings VALUES (?, ?)", [(k, str(v)) for k, v in settings.items()])
    db.executemany("INSERT INTO files (id, path, size, mtime_ns, duration, indexed_at) VALUES (?, ?, 0, 0, 10.0, 0)",
                   ((i + 1, f"/videos/{i:07d}.mp4") for i in range(len(vectors))))
    db.executemany("INSERT INTO entries (id, file_id, start, end, vector) VALUES (?, ?, 0.0, 10.0, ?)",
                   ((i + 1, i + 1, v.tobytes()) for i, v in enumerate(vectors)))
    db.execute("COMMIT")
    db.close()


def measure(kind: str, n: int, queries: int, nprobes: list[int]) -> list[dict]:
    import faiss

    rng = np.random.default_rng(n)
    x = data(kind, n, rng)
    q = data(kind, queries, np.random.default_rng(7))
    flat = faiss.IndexFlatIP(DIM)
    flat.add(x)
    _, truth = flat.search(q, 10)
    truth += 1  # entry ids start at 1
    del flat
    rows = []
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent.parent / ".cache") as tmp:
        t = time.perf_counter()
        write_index(Path(tmp) / "idx", x)
        t_sqlite = time.perf_counter() - t
        del x
        t = time.perf_counter()
        index = store.VideoIndex(Path(tmp) / "idx")  # no FAISS file yet: built from the SQLite record
        t_build = time.perf_counter() - t
        for nprobe in nprobes if index.faiss_kind == "ivf" else [0]:
            if nprobe:
                index._apply_nprobe(nprobe)
            for v in q[:5]:
                index.search_embedding(v, top_k=10)  # warm-up
            lat, hits = [], []
            for v in q:
                t = time.perf_counter()
                found = index.search_embedding(v, top_k=10)
                lat.append((time.perf_counter() - t) * 1000)
                hits.append([h.entry_id for h in found])
            recall = float(np.mean([len(set(h) & set(t_)) / 10 for h, t_ in zip(hits, truth.tolist())]))
            lat.sort()
            rows.append(dict(data=kind, n=n, kind=index.faiss_kind, nlist=getattr(index._faiss, "nlist", 0),
                             nprobe=nprobe or "-", p50=statistics.median(lat), p99=lat[math.ceil(0.99 * len(lat)) - 1],
                             recall=recall, build=t_build, sqlite=t_sqlite))
            print(rows[-1], file=sys.stderr, flush=True)
        index.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[16, 64, 256, 1024])
    ap.add_argument("--data", nargs="+", default=["clustered", "random"])
    args = ap.parse_args()
    (Path(__file__).resolve().parent.parent / ".cache").mkdir(exist_ok=True)
    import faiss

    rows = [r for n in args.sizes for kind in args.data for r in measure(kind, n, args.queries, args.nprobe)]
    print(header("Search: video index latency and recall (bench/search.py)"))
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads; {args.queries} single queries, top-10, "
          "through VideoIndex.search_embedding (FAISS + SQLite lookup); recall@10 vs exact search.\n")
    print("| data | entries | FAISS kind | nlist | nprobe | p50 ms | p99 ms | recall@10 | FAISS build s | SQLite write s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['data']} | {r['n']:,} | {r['kind']} | {r['nlist'] or '-'} | {r['nprobe']} | {r['p50']:.2f} | "
              f"{r['p99']:.2f} | {r['recall']:.3f} | {r['build']:.1f} | {r['sqlite']:.1f} |")


if __name__ == "__main__":
    main()
