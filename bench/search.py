"""Search latency, recall and memory of the video index at 10k, 100k and 1M entries.

Goes through the real index: entries are written to an index's SQLite record, VideoIndex opens it and
builds its FAISS structure (kind chosen by size, as in use; from 100k entries the `--faiss` kinds side by side
on the same record: `ivf` full vectors, `ivfpq` product-quantised codes re-ranked exactly from SQLite), and
each query runs `search_embedding` (FAISS search + SQLite lookup of path and times). Recall@10 is against
exact inner-product search. Memory per entry: the FAISS structure's serialised size (what it holds in RAM:
codes or vectors, ids, centroids, codebook) divided by the entries.

Three kinds of data:
  random    512-d isotropic Gaussian vectors, normalised: no neighbourhood structure at all, the worst case
            for any partitioning index (every point is about equally far from every other).
  clustered 512-d, a mixture of 1000 Gaussians (cos(point, its centre) ~ 0.7), normalised.
  ours      videococa-tiny's own video embeddings (128-d): 4,400 real ones (1,100 synthetic benchmark
            videos x 4 windows of 0.5 s, 4 frames each), and from them as many as asked, each
            normalise(b_i + u (b_j - b_i) + 0.05 e): two real embeddings i, j at random, u ~ U(0, 0.5),
            e ~ N(0, I/128). 1M real video embeddings are not available here; this keeps the model's own
            geometry (where its embeddings lie and how they crowd) and fills the space between them.

Targets: (issue 6) p50 < 20 ms with recall@10 >= 0.95 at 1M; (issue 22) IVF-PQ recall@10 >= 0.95 at 1M on our
data, with its memory per entry.

    .venv/bin/python bench/search.py [--sizes 10000 100000 1000000] [--queries 200] [--data ours]
                                     [--faiss ivf ivfpq]
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
CACHE = Path(__file__).resolve().parent.parent / ".cache"


def base_embeddings() -> np.ndarray:
    """(4400, 128) videococa-tiny embeddings of the cached synthetic benchmarks (500 + 600 videos, seeds 2022 and 7),
    4 windows of 0.5 s each, 4 frames per window; computed once and kept in .cache."""
    path = CACHE / "search-base-tiny-n1100-seg0.5-f4.npy"
    if path.is_file():
        return np.load(path)
    from videococa import load_model
    from videococa.synthetic.benchmark import make_benchmark
    from videococa.tasks.batch import EncodedClip, encode_videos

    model = load_model("videococa-tiny")
    paths = sorted(str(p) for n, seed in ((500, 2022), (600, 7))
                   for p in (make_benchmark(num_videos=n, seed=seed) / "videos").glob("*.mp4"))
    t = time.perf_counter()
    emb = [e.embedding.float().numpy() for e in encode_videos(model, paths, num_frames=4, segment=0.5, batch_size=16)
           if isinstance(e, EncodedClip)]
    x = np.stack(emb).astype(np.float32)
    print(f"base: {len(x)} embeddings of {len(paths)} videos in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    np.save(path, x)
    return x


def data(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "ours":
        base = base_embeddings()
        i, j = rng.integers(0, len(base), n), rng.integers(0, len(base), n)
        x = base[i] + rng.uniform(0, 0.5, (n, 1)).astype(np.float32) * (base[j] - base[i])
        x += 0.05 * rng.standard_normal(x.shape, dtype=np.float32) / math.sqrt(x.shape[1])
    elif kind == "random":
        x = rng.standard_normal((n, DIM), dtype=np.float32)
    else:
        centres = np.random.default_rng(12345).standard_normal((1000, DIM), dtype=np.float32)
        x = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def write_index(path: Path, vectors: np.ndarray) -> None:
    """An index directory whose SQLite record holds `vectors` as the entries (windows) of one file that exists
    (search leaves out entries whose file is gone)."""
    path.mkdir(parents=True)
    video = path.parent / "video.mp4"
    video.write_bytes(b"")
    db = sqlite3.connect(path / "index.sqlite", isolation_level=None)
    db.executescript(store._SCHEMA)
    settings = {"schema_version": store.SCHEMA_VERSION, "model": "bench", "pretrained": "", "precision": "fp32",
                "fingerprint": "bench", "embed_dim": vectors.shape[1], "frames": 8, "sampling": "uniform",
                "pooling": "attentional", "segment": 0, "created": "", "videococa": "", "generation": 1}
    db.execute("BEGIN")
    db.executemany("INSERT INTO settings VALUES (?, ?)", [(k, str(v)) for k, v in settings.items()])
    db.execute("INSERT INTO files (id, path, size, mtime_ns, duration, indexed_at) VALUES (1, ?, 0, 0, 1e6, 0)",
               (str(video),))
    db.executemany("INSERT INTO entries (id, file_id, start, end, vector) VALUES (?, 1, ?, ?, ?)",
                   ((i + 1, float(i), float(i + 1), v.tobytes()) for i, v in enumerate(vectors)))
    db.execute("COMMIT")
    db.close()


def measure(kind: str, n: int, queries: int, nprobes: list[int], kinds: list[str]) -> list[dict]:
    import faiss

    rng = np.random.default_rng(n)
    x = data(kind, n, rng)
    q = data(kind, queries, np.random.default_rng(7))
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    _, truth = flat.search(q, 10)
    truth += 1  # entry ids start at 1
    del flat
    rows = []
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        t = time.perf_counter()
        write_index(Path(tmp) / "idx", x)
        t_sqlite = time.perf_counter() - t
        del x
        for faiss_kind in kinds if n >= store.EXACT_LIMIT else [None]:
            t = time.perf_counter()
            # no FAISS file yet, or one of another kind: built from the SQLite record
            index = store.VideoIndex(Path(tmp) / "idx", faiss=faiss_kind)
            t_build = time.perf_counter() - t
            per_entry = len(faiss.serialize_index(index._faiss)) / n
            for nprobe in nprobes if index.faiss_kind != "exact" else [0]:
                rows.append(dict(data=kind, n=n, dim=q.shape[1], kind=index.faiss_kind,
                                 nlist=getattr(index._faiss, "nlist", 0), nprobe=nprobe or "-", build=t_build,
                                 sqlite=t_sqlite, bytes=per_entry, **_queries(index, q, truth, nprobe)))
                print(rows[-1], file=sys.stderr, flush=True)
            index.close()
    return rows


def _queries(index, q: np.ndarray, truth: np.ndarray, nprobe: int) -> dict:
    """p50 and p99 latency (ms) and recall@10 of single queries through `search_embedding`."""
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
    _, raw = index._faiss.search(q, 10)  # FAISS alone: for ivfpq, the codes' order before re-ranking

    def recall(found) -> float:
        return float(np.mean([len(set(h) & set(t_)) / 10 for h, t_ in zip(found, truth.tolist())]))

    lat.sort()
    return dict(p50=statistics.median(lat), p99=lat[math.ceil(0.99 * len(lat)) - 1], recall=recall(hits),
                raw=recall(raw.tolist()))


def rerank_sweep(kind: str, n: int, queries: int, nprobe: int = store.DEFAULT_NPROBE) -> list[str]:
    """Recall@10 of IVF-PQ (as the index builds it) after exactly re-scoring its best R candidates, for several R and
    two code sizes (FAISS and numpy only: no SQLite), to choose store.RERANK and store.PQ_DIMS_PER_CODE_BYTE."""
    import faiss

    x = data(kind, n, np.random.default_rng(n))
    q = data(kind, queries, np.random.default_rng(7))
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    _, truth = flat.search(q, 10)
    del flat
    out = []
    for per_byte in (store.PQ_DIMS_PER_CODE_BYTE, store.PQ_DIMS_PER_CODE_BYTE // 2):
        if per_byte == store.PQ_DIMS_PER_CODE_BYTE:  # what the index builds
            index, _ = store.build_faiss(x, np.arange(n), x.shape[1], exact_limit=0, approximate="ivfpq")
        else:
            index = _ivfpq(x, x.shape[1] // per_byte)
        index.nprobe = nprobe
        for r in (256, 512, 1024, 2048):
            t = time.perf_counter()
            _, cand = index.search(q, r)
            ms = (time.perf_counter() - t) / len(q) * 1000
            top = [c[c >= 0][np.argsort(-(x[c[c >= 0]] @ v))[:10]] for c, v in zip(cand, q)]
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, truth)]))
            out.append(f"| {kind} | {x.shape[1]} | {n:,} | {index.pq.M} | {nprobe} | {r} | {recall:.3f} | {ms:.2f} |")
            print(out[-1], file=sys.stderr, flush=True)
    return out


def _ivfpq(x: np.ndarray, code_bytes: int):
    """build_faiss's IVF-PQ with another code size (the sweep's second column)."""
    import faiss

    n, dim = x.shape
    nlist = int(2 ** round(math.log2(4 * math.sqrt(n))))
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, code_bytes, 8, faiss.METRIC_INNER_PRODUCT)
    index.train(x[np.random.default_rng(0).choice(n, size=min(n, 40 * nlist), replace=False)])
    index.add(x)
    return index


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[16, 64, 256, 1024])
    ap.add_argument("--data", nargs="+", default=["clustered", "random"], choices=["clustered", "random", "ours"])
    ap.add_argument("--faiss", nargs="+", default=["ivf"], choices=list(store.FAISS_KINDS),
                    help="approximate kinds measured side by side from 100k entries")
    ap.add_argument("--rerank-sweep", action="store_true",
                    help="also: IVF-PQ recall@10 by re-ranked candidates and code size, at the largest size")
    args = ap.parse_args()
    CACHE.mkdir(exist_ok=True)
    import faiss

    rows = [r for n in args.sizes for kind in args.data
            for r in measure(kind, n, args.queries, args.nprobe, args.faiss)]
    print(header("Search: video index latency and recall (bench/search.py)"))
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads; {args.queries} single queries, top-10, "
          "through VideoIndex.search_embedding (FAISS + SQLite lookup; ivfpq: + exact re-ranking of "
          f"{store.RERANK} candidates); recall@10 vs exact search.\n")
    print("| data | dim | entries | FAISS kind | nlist | nprobe | p50 ms | p99 ms | recall@10 | FAISS alone recall@10 | "
          "FAISS bytes/entry | FAISS build s | SQLite write s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['data']} | {r['dim']} | {r['n']:,} | {r['kind']} | {r['nlist'] or '-'} | {r['nprobe']} | "
              f"{r['p50']:.2f} | {r['p99']:.2f} | {r['recall']:.3f} | {r['raw']:.3f} | {r['bytes']:.1f} | "
              f"{r['build']:.1f} | {r['sqlite']:.1f} |")
    if args.rerank_sweep:
        sweep = [line for kind in args.data for line in rerank_sweep(kind, max(args.sizes), args.queries)]
        print("\nIVF-PQ re-ranking sweep (FAISS search for R candidates, exact re-scoring in numpy; no SQLite):\n")
        print("| data | dim | entries | code bytes | nprobe | R re-ranked | recall@10 | FAISS ms/query |")
        print("|---|---|---|---|---|---|---|---|")
        print("\n".join(sweep))
    pq = [r for r in rows if r["kind"] == "ivfpq" and r["nprobe"] == store.DEFAULT_NPROBE]
    for r in pq:
        met = r["recall"] >= 0.95 and r["p50"] < 20
        print(f"target ivfpq at {r['n']:,} ({r['data']}, nprobe {r['nprobe']}): recall@10 >= 0.95 and p50 < 20 ms: "
              f"{'met' if met else 'NOT met'} (recall {r['recall']:.3f}, p50 {r['p50']:.2f} ms, "
              f"{r['bytes']:.1f} bytes/entry)")


if __name__ == "__main__":
    main()
