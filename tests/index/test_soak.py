"""Soak: several writer processes and a searcher on one index, writers killed at random; then a consistency check.

Bounded to about a minute. Whatever the interleaving, afterwards SQLite ids == FAISS ids (file and memory),
every file on disk is indexed exactly once, and the searcher never saw an error or a hit for a missing entry.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import faiss
import pytest

from videococa import VideoIndex
from videococa.index.store import faiss_ids

SEARCHER = textwrap.dedent("""
    import os, sys, videococa
    from videococa import VideoIndex
    idx, stop = sys.argv[1], sys.argv[2]
    m = videococa.load_model("videococa-tiny")
    searches = hits = 0
    while not os.path.exists(stop):
        if not os.path.exists(os.path.join(idx, "index.sqlite")):
            continue
        with VideoIndex(idx, m, create=False) as index:
            for q in ("a red circle", "a blue square", "a yellow star"):
                for h in index.search(q, top_k=50):
                    assert os.path.exists(h.path), h
                    row = index.db.execute("SELECT COUNT(*) FROM entries WHERE id = ?", (h.entry_id,)).fetchone()
                    assert row[0] in (0, 1), h  # 0: removed by a writer after this search ran
                    hits += 1
                searches += 1
    print(searches, hits, flush=True)
""")


@pytest.mark.slow
def test_writers_killed_at_random_leave_a_consistent_index(tiny_model, easy_videos, tmp_path):
    rng = random.Random(2026)
    libs = []
    for k in range(3):
        lib = tmp_path / f"lib{k}"
        lib.mkdir()
        for j, p in enumerate(easy_videos[:4]):
            shutil.copy2(p, lib / f"{k}{j}_{Path(p).name}")
        libs.append(lib)
    idx, stop = tmp_path / "idx", tmp_path / "stop"
    searcher = subprocess.Popen([sys.executable, "-c", SEARCHER, str(idx), str(stop)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def writer(lib: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "videococa", "index", str(lib), "--index", str(idx),
                                 "--batch-size", "1", "--workers", "1", "--json"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    deadline = time.time() + 45
    rounds = kills = 0
    while time.time() < deadline and rounds < 12:
        rounds += 1
        victim = rng.choice(sorted(tmp_path.glob("lib*/*.mp4")))
        os.utime(victim, ns=(time.time_ns(), time.time_ns() + rounds * 10**9))  # changed: re-embedded next run
        procs = [writer(lib) for lib in libs]
        time.sleep(rng.uniform(1.0, 4.0))  # random kill times are the point of a soak test
        running = [p for p in procs if p.poll() is None]  # a writer needs seconds just to start: never empty
        for p in running:
            if p is running[0] or rng.random() < 0.5:  # at least one kill per round, whatever the machine's speed
                p.send_signal(signal.SIGKILL)
                kills += 1
        for p in procs:
            _, err = p.communicate(timeout=240)
            assert p.returncode in (0, -signal.SIGKILL), err
            assert "Traceback" not in err and "IntegrityError" not in err
    stop.touch()
    out, err = searcher.communicate(timeout=240)
    assert searcher.returncode == 0, err
    searches, _ = map(int, out.split())
    assert searches > 0 and kills > 0

    with VideoIndex(idx, tiny_model) as index:  # a clean run repairs nothing: it only finishes the work
        index.update(libs)
        on_disk = sorted(str(p) for p in tmp_path.glob("lib*/*.mp4"))
        assert sorted(f["path"] for f in index.files()) == on_disk
        assert all(f["entries"] == 1 for f in index.files())
        db_ids = [r[0] for r in index.db.execute("SELECT id FROM entries ORDER BY id")]
        assert index._ids.tolist() == db_ids and index._faiss.ntotal == len(db_ids) == 12
    assert faiss_ids(faiss.read_index(str(idx / "vectors.faiss"))).tolist() == db_ids
    with VideoIndex(idx, tiny_model) as index:
        for p in on_disk:
            name = Path(p).name.split("_", 1)[1][:-4].replace("_", " ")  # e.g. "red circle"
            hits = index.search(f"a {name}", top_k=3)
            assert p in {h.path for h in hits}
    assert sqlite3.connect(idx / "index.sqlite").execute("PRAGMA integrity_check").fetchone() == ("ok",)
