"""`videococa serve` under load: 32 concurrent clients on localhost, mixed text searches and thumbnails, while a
background job indexes more videos; then searches alone, as a ratio of in-process `VideoIndex.search`.

Per model (videococa-tiny, and coca_ViT-B-32 with random weights saved to a file so the server loads the same):
  1. an index of ENTRIES entries: real settings and model, 1-second entries of FILES hard links to one small
     video, with clustered random 512-d vectors written to the SQLite record (encoding 100k real segments would
     take hours here); the FAISS structure is built by the index itself (IVF at 100k).
  2. in-process: `VideoIndex.search(text, top_k=20)` in one thread on the same queries -> queries/s.
  3. the server (a subprocess, `videococa serve --no-scan`), 32 asyncio clients (httpx) for SECONDS:
     70% searches, 30% thumbnails, while POST /api/index/update embeds 20 new videos -> p50 / p99 latency,
     requests/s, errors (must be 0).
  4. searches only, 32 clients, half as long -> queries/s; ratio to (2) (target >= 0.7), and to (2) with the
     texts encoded 32 at a time as the server's model thread batches them (the fairer baseline).
Clients and server share this machine's cores; the ratio is therefore a lower bound on what a separate client
machine would see.

    .venv/bin/python bench/serve.py [--entries 100000] [--clients 32] [--seconds 30] [--models ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import header

from videococa import VideoIndex, load_model
from videococa.synthetic.world import COLOURS, DIRECTIONS, SHAPES
from videococa.testing import write_easy_videos

QUERIES = [f"a {c} {s} moving {d}" for c in COLOURS for s in SHAPES for d in DIRECTIONS]


def model_args(name: str, tmp: Path) -> list[str]:
    """CLI model options; a random-weight open_clip model is saved once so both processes load the same weights."""
    if name == "videococa-tiny":
        return ["--model", name]
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    ref = open_clip.create_model(name, pretrained=None)
    torch.nn.init.normal_(ref.text_decoder.text_projection, std=0.02)
    path = tmp / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    return ["--model", name, "--pretrained", str(path)]


def build(model, lib: Path, idx: Path, entries: int, per_file: int = 100) -> None:
    """An index at `idx` with `entries` one-second entries over hard links to one real video under `lib`."""
    (lib / "fake").mkdir(parents=True)
    (lib.parent / "easy").mkdir()
    source = write_easy_videos(lib.parent / "easy")[0]
    files = entries // per_file
    for i in range(files):
        os.link(source, lib / "fake" / f"{i:06d}.mp4")
    with VideoIndex(idx, model, segment=1.0) as index:
        dim = index.dim
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((1000, dim), dtype=np.float32)
    x = centres[rng.integers(0, 1000, entries)] + rng.standard_normal((entries, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    st = os.stat(source)
    db = sqlite3.connect(idx / "index.sqlite", isolation_level=None)
    db.execute("BEGIN")
    db.executemany("INSERT INTO files (id, path, size, mtime_ns, duration, indexed_at) VALUES (?, ?, ?, ?, ?, ?)",
                   ((i + 1, str(lib / "fake" / f"{i:06d}.mp4"), st.st_size, st.st_mtime_ns, 2.0, time.time())
                    for i in range(files)))
    db.executemany("INSERT INTO entries (id, file_id, start, end, vector) VALUES (?, ?, ?, ?, ?)",
                   ((k + 1, k // per_file + 1, float(k % per_file), float(k % per_file + 1), x[k].tobytes())
                    for k in range(entries)))
    db.execute("UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
    db.execute("COMMIT")
    db.close()
    with VideoIndex(idx, model) as index:
        index.rebuild()


def in_process(model, idx: Path, seconds: float, batch: int = 1) -> float:
    """Searches/s of `VideoIndex.search` one query at a time, or with `batch` texts encoded in one call (what the
    server's model thread does when queries arrive together) and each searched by embedding."""
    with VideoIndex(idx, model) as index:
        for q in QUERIES[:5]:
            index.search(q, top_k=20)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            texts = [QUERIES[(n + i) % len(QUERIES)] for i in range(batch)]
            if batch == 1:
                index.search(texts[0], top_k=20)
            else:
                for e in model.encode_text(texts):
                    index.search_embedding(e, top_k=20)
            n += batch
        return n / (time.perf_counter() - t0)


async def load(url: str, clients: int, seconds: float, thumbs: float, video_ids: list[int]) -> dict:
    import httpx

    lat: dict[str, list[float]] = {"search": [], "thumbnail": []}
    errors: list[str] = []
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(i: int, http: httpx.AsyncClient) -> None:
        rng = random.Random(i)
        while time.perf_counter() < stop:
            t = time.perf_counter()
            if rng.random() < thumbs:
                kind = "thumbnail"
                r = await http.get(f"{url}api/videos/{rng.choice(video_ids)}/thumbnail?t={rng.randint(0, 19) / 10}")
            else:
                kind = "search"
                r = await http.post(f"{url}api/search", json={"text": rng.choice(QUERIES), "top_k": 20})
            lat[kind].append(time.perf_counter() - t)
            if r.status_code != 200:
                errors.append(f"{kind} {r.status_code} {r.text[:200]}")

    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    wall = time.perf_counter() - t0
    return {"lat": lat, "errors": errors, "wall": wall}


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(xs, p)) * 1000 if xs else float("nan")


def start_server(idx: Path, lib: Path, margs: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "videococa", "serve", "--index", str(idx), "--library", str(lib),
                             "--port", "0", "--no-scan", *margs], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, line.split()[2]


def run_model(name: str, args, tmp: Path) -> tuple[str, list[str]]:
    margs = model_args(name, tmp)
    model = load_model(margs[1], margs[3] if len(margs) > 2 else None)
    lib, idx = tmp / name / "library", tmp / name / "index"
    t = time.perf_counter()
    build(model, lib, idx, args.entries)
    built = time.perf_counter() - t
    inproc = in_process(model, idx, args.seconds / 2)
    batched = in_process(model, idx, args.seconds / 2, batch=args.clients)
    new = lib / "new"
    new.mkdir()
    for k in range(4):
        (tmp / name / f"more{k}").mkdir()
        for p in write_easy_videos(tmp / name / f"more{k}"):
            shutil.copy(p, new / f"{k}_{Path(p).name}")
    proc, url = start_server(idx, lib, margs)
    try:
        import httpx

        video_ids = list(range(1, args.entries // 100 + 1))
        job = httpx.post(url + "api/index/update", timeout=60).json()["job"]["id"]
        mixed = asyncio.run(load(url, args.clients, args.seconds, 0.3, video_ids))
        state = httpx.get(f"{url}api/jobs/{job}", timeout=60).json()
        while state["state"] not in ("done", "failed"):
            time.sleep(1)
            state = httpx.get(f"{url}api/jobs/{job}", timeout=60).json()
        searches = asyncio.run(load(url, args.clients, args.seconds / 2, 0.0, video_ids))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    ms, mt = mixed["lat"]["search"], mixed["lat"]["thumbnail"]
    qps = len(searches["lat"]["search"]) / searches["wall"]
    return (f"| {name} | {args.entries:,} | {len(ms) + len(mt)} in {mixed['wall']:.0f} s = "
            f"{(len(ms) + len(mt)) / mixed['wall']:.1f}/s | {pct(ms, 50):.0f} / {pct(ms, 99):.0f} | "
            f"{pct(mt, 50):.0f} / {pct(mt, 99):.0f} | {len(mixed['errors']) + len(searches['errors'])} | "
            f"{state['state']}: {state['done']}/{state['total']} files | {qps:.1f} | {inproc:.1f} | "
            f"**{qps / inproc:.2f}x** | {batched:.1f} | {qps / batched:.2f}x | {built:.0f} s |"), \
        mixed["errors"] + searches["errors"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--entries", type=int, default=100_000)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--models", nargs="+", default=["videococa-tiny", "coca_ViT-B-32"])
    args = p.parse_args()
    print(header(f"serve: {args.clients} clients, {args.seconds:.0f} s mixed (70% search, 30% thumbnails) while "
                 "indexing 20 videos, then searches only (bench/serve.py)"))
    print("| model | entries | mixed requests | search p50 / p99 ms | thumbnail p50 / p99 ms | errors | background "
          "job | server searches/s | in-process searches/s | ratio | in-process, texts batched by 32 | ratio | "
          "index build |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
            row, errors = run_model(name, args, Path(tmp))
        print(row, flush=True)
        for e in errors[:5]:
            print(f"  error: {e}")


if __name__ == "__main__":
    main()
