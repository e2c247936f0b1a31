"""The persistent index: incremental updates, crash safety, search parity after reopening, bad input."""

from __future__ import annotations

import os
import select
import sqlite3
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from videococa import IndexStoreError, VideoIndex
from videococa.errors import OptionError
from videococa.index import build_faiss, store
from videococa.paths import to_db
from videococa.testing import EASY_VIDEOS


@pytest.fixture
def library(tmp_path, easy_videos):
    lib = tmp_path / "library"
    (lib / "sub").mkdir(parents=True)
    for i, p in enumerate(easy_videos):
        shutil.copy(p, lib / ("sub" if i % 2 else "") / Path(p).name)
    (lib / "notes.txt").write_text("not a video")  # not a video suffix: ignored by the directory walk
    return lib


def _entries(index):
    return index.db.execute("SELECT f.path, e.start, e.end FROM entries e JOIN files f ON f.id = e.file_id "
                            "ORDER BY f.path, e.start").fetchall()


def test_add_rerun_modify_delete(tiny_model, library, tmp_path):
    idx = tmp_path / "idx"
    with VideoIndex(idx, tiny_model) as index:
        r = index.add([library])
        assert len(r.added) == 5 and not r.failed and len(index) == 5
        r = index.update([library])
        assert (len(r.unchanged), r.added, r.updated, r.removed) == (5, [], [], [])
        target = library / "red_circle.mp4"
        shutil.copy(library / "sub" / "blue_square.mp4", target)  # new content under the same name
        os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
        r = index.update([library])
        assert r.updated == [str(target)] and len(r.unchanged) == 4
        hit = index.search("a blue square", top_k=2)
        assert {Path(h.path).name for h in hit} == {"red_circle.mp4", "blue_square.mp4"}  # both show a blue square
        (library / "sub" / "blue_square.mp4").unlink()
        r = index.update([library])
        assert r.removed == [str(library / "sub" / "blue_square.mp4")] and len(index) == 4
        assert all(Path(h.path).name != "blue_square.mp4" or "sub" not in h.path
                   for h in index.search("a blue square", top_k=4))
        assert len(index.files()) == 4


def test_search_is_identical_after_reopening(tiny_model, library, tmp_path):
    with VideoIndex(tmp_path / "idx", tiny_model) as index:
        index.add([library])
        before = [index.search(q, top_k=5) for q in ("a red circle", "a yellow star", "a purple hexagon")]
    assert Path(before[0][0].path).name == "red_circle.mp4" and Path(before[1][0].path).name == "yellow_star.mp4"
    with VideoIndex(tmp_path / "idx", tiny_model) as index:
        after = [index.search(q, top_k=5) for q in ("a red circle", "a yellow star", "a purple hexagon")]
    assert after == before


def test_segments_return_moments(tiny_model, easy_videos, tmp_path):
    with VideoIndex(tmp_path / "seg", tiny_model, segment=0.5, num_frames=2) as index:
        index.add(easy_videos[:2])
        rows = _entries(index)
        assert len(rows) == 8  # 2 s videos, 4 windows each
        assert [(s, e) for _, s, e in rows[:4]] == [(0.0, 0.5), (0.5, 1.0), (1.0, 1.5), (1.5, 2.0)]
        hits = index.search("a red circle", top_k=8)
        assert len({(h.path, h.start) for h in hits}) == 8 and all(h.end - h.start == 0.5 for h in hits)
    with pytest.raises(IndexStoreError, match="segments of 0.5 s, not 2"):
        VideoIndex(tmp_path / "seg", tiny_model, segment=2)


def test_a_stale_faiss_file_is_rebuilt_from_sqlite(tiny_model, library, tmp_path):
    with VideoIndex(tmp_path / "idx", tiny_model) as index:
        index.add([library])
        want = index.search("a green triangle", top_k=5)
    (tmp_path / "idx" / "vectors.faiss").write_bytes(b"damaged")
    with VideoIndex(tmp_path / "idx", tiny_model) as index:
        assert index.search("a green triangle", top_k=5) == want
    (tmp_path / "idx" / "vectors.json").unlink()
    with VideoIndex(tmp_path / "idx", tiny_model) as index:
        assert index.search("a green triangle", top_k=5) == want


def test_other_model_or_settings_are_refused(tiny_model, model, library, tmp_path):
    with VideoIndex(tmp_path / "idx", tiny_model) as index:
        index.add([library / "red_circle.mp4"])
    with pytest.raises(IndexStoreError, match=r"built with model videococa-tiny.*not coca_ViT-B-32"):
        VideoIndex(tmp_path / "idx", model)
    with pytest.raises(IndexStoreError, match="uses 8 frames per entry, not 4"):
        VideoIndex(tmp_path / "idx", tiny_model, num_frames=4)
    with VideoIndex(tmp_path / "idx") as index:  # no model: opens for inspection
        assert index.settings["model"] == "videococa-tiny" and len(index) == 1
        with pytest.raises(IndexStoreError, match="text search needs the index's model"):
            index.search("a red circle")


def test_bad_index_paths(tiny_model, tmp_path):
    with pytest.raises(IndexStoreError, match="no video index at"):
        VideoIndex(tmp_path / "missing", tiny_model, create=False)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(IndexStoreError, match="is a file"):
        VideoIndex(f, tiny_model)
    with pytest.raises(IndexStoreError, match="cannot create the index"):
        VideoIndex(f / "idx", tiny_model)  # parent is a file: not creatable (as root, permissions never stop us)
    d = tmp_path / "corrupt"
    d.mkdir()
    (d / "index.sqlite").write_bytes(b"garbage" * 200)
    with pytest.raises(IndexStoreError, match="not a usable video index"):
        VideoIndex(d, tiny_model)


def test_bad_files_are_reported_and_the_rest_indexed(tiny_model, library, tmp_path):
    (library / "broken.mp4").write_bytes(b"\x00" * 1000)
    with VideoIndex(tmp_path / "idx", tiny_model) as index:
        r = index.update([library, tmp_path / "typo"])
        assert len(r.added) == 5 and len(index) == 5
        assert {Path(f.path).name for f in r.failed} == {"broken.mp4", "typo"}
        assert any("no such file" in f.reason for f in r.failed)


# Run in a child process: after the index commits its K-th file, write one byte to fd READY, then block reading fd
# GO, which the test never writes to: the test's signal finds the child there, with exactly K files committed.
_PAUSE_AFTER_K_FILES = textwrap.dedent("""
    import os, sys
    from videococa.index.store import VideoIndex

    K, READY, GO = (int(a) for a in sys.argv[1:4])
    sys.argv = ["videococa", *sys.argv[4:]]
    applied, files = VideoIndex._applied, 0

    def pausing(self, gen, removed=(), added=None, vectors=None):
        global files
        applied(self, gen, removed, added, vectors)  # the file's transaction is committed before this is called
        if added is not None and len(added):
            files += 1
            if files == K:
                os.write(READY, b"k")
                os.read(GO, 1)  # returns only if the test closes GO without a signal ending this process
                raise SystemExit("released without a signal")

    VideoIndex._applied = pausing
""")


@contextmanager
def _paused_after(k: int, code: str, args: list[str], **popen):
    """Start `code` (after the hook above) in a child; yield it once it has committed exactly k files and stopped."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-c", _PAUSE_AFTER_K_FILES + code, str(k), str(ready_w), str(go_r),
                                 *args], pass_fds=(ready_w, go_r), **popen)
        os.close(ready_w)
        os.close(go_r)
        ready_w = go_r = None
        try:
            readable, _, _ = select.select([ready_r], [], [], 300)  # a bounded wait for the byte; no polling
            assert readable and os.read(ready_r, 1) == b"k", f"the child never committed {k} files: {proc.poll()}"
            yield proc
        finally:
            if proc.returncode is None:  # the test failed before it saw the child end
                proc.kill()
                proc.communicate()
    finally:
        for fd in (ready_r, ready_w, go_r, go_w):
            if fd is not None:
                os.close(fd)


def _rerun_completes(idx, model, library, committed: int, total: int = 5) -> None:
    """Re-running the update keeps the committed files, embeds only the rest, and leaves no duplicates."""
    with VideoIndex(idx, model) as index:
        r = index.update([library])
        assert len(r.unchanged) == committed and len(r.added) == total - committed
        rows = _entries(index)
        assert len(rows) == len(set(rows)) == total == len(index)  # complete, no duplicates
        assert index._faiss.ntotal == total


def test_kill_9_while_indexing_loses_nothing_committed(tiny_model, library, tmp_path):
    idx = tmp_path / "idx"
    script = textwrap.dedent(f"""
        import videococa
        m = videococa.load_model("videococa-tiny")
        with videococa.VideoIndex({str(idx)!r}, m) as index:
            index.add([{str(library)!r}], batch_size=1, workers=1)
    """)
    with _paused_after(3, script, []) as proc:
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    with VideoIndex(idx, tiny_model) as index:
        assert len(index.files()) == 3 == len(index)  # exactly the committed files, each whole
    _rerun_completes(idx, tiny_model, library, committed=3)


def test_ivf_index_above_the_exact_limit_finds_neighbours_and_removes():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 32)).astype(np.float32)
    x = centres[rng.integers(0, 50, 5000)] + 0.3 * rng.normal(size=(5000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(100, 5100)
    exact, kind_e = build_faiss(x, ids, 32)
    approx, kind_a = build_faiss(x, ids, 32, exact_limit=1000)
    assert (kind_e, kind_a) == ("exact", "ivf") and approx.nlist == 256
    approx.nprobe = 32
    q = x[:100]
    _, ie = exact.search(q, 10)
    _, ia = approx.search(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ie, ia)])
    assert recall >= 0.9
    assert (ie[:, 0] == ids[:100]).all()  # each vector is its own nearest neighbour
    approx.remove_ids(np.array([100, 101]))
    _, ia = approx.search(q[:2], 1)
    assert 100 not in ia and 101 not in ia and approx.ntotal == 4998


def _bulk_entries(idx: Path, vectors: np.ndarray, video: str) -> None:
    """`vectors` as entries of one file (`video`), written straight into an empty index's SQLite record."""
    db = sqlite3.connect(idx / "index.sqlite", isolation_level=None)
    db.execute("BEGIN")
    db.execute("INSERT INTO files (id, path, size, mtime_ns, duration, indexed_at) VALUES (1, ?, 0, 0, 1.0, 0)",
               (to_db(video),))
    db.executemany("INSERT INTO entries (file_id, start, end, vector) VALUES (1, ?, ?, ?)",
                   ((i / 1000, (i + 1) / 1000, v.tobytes()) for i, v in enumerate(vectors)))
    db.execute("UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
    db.execute("COMMIT")
    db.close()


def test_ivfpq_is_recorded_and_its_candidates_reranked_exactly(tiny_model, easy_videos, tmp_path, monkeypatch):
    monkeypatch.setattr(store, "EXACT_LIMIT", 5000)  # 12k entries, not 100k: the approximate kinds at test size
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(100, 128))
    x = (centres[rng.integers(0, 100, 12_000)] + 0.5 * rng.normal(size=(12_000, 128))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx = tmp_path / "idx"
    with VideoIndex(idx, tiny_model) as index:
        assert index.approximate == "ivf" and index.faiss_kind == "exact"
    _bulk_entries(idx, x, easy_videos[0])
    with VideoIndex(idx, tiny_model, faiss="ivfpq") as index:
        assert (index.faiss_kind, index._faiss.code_size, index.stats()["faiss"]) == ("ivfpq", 16, "ivfpq")
        recalls = []
        for q in x[:40]:
            truth = np.argsort(-(x @ q))[:10] + 1  # entry ids start at 1
            hits = index.search_embedding(q, top_k=10)
            ids = np.array([h.entry_id for h in hits])
            np.testing.assert_allclose([h.score for h in hits], x[ids - 1] @ q, atol=1e-5)  # exact, not PQ scores
            assert all(a.score >= b.score for a, b in zip(hits, hits[1:])) and ids[0] == truth[0]
            recalls.append(len(set(ids) & set(truth)) / 10)
        assert np.mean(recalls) >= 0.9
    with VideoIndex(idx) as index:  # the setting is recorded: it reopens the same way, from the saved file
        assert index.faiss_kind == "ivfpq" and index.settings["faiss"] == "ivfpq"
    with VideoIndex(idx, faiss="ivf") as index:  # another setting rebuilds the derived FAISS file
        assert index.faiss_kind == "ivf" and not hasattr(index._faiss, "pq")
        assert [h.entry_id for h in index.search_embedding(x[7], top_k=1)] == [8]
    with pytest.raises(OptionError, match="ivf, ivfpq"):
        VideoIndex(idx, faiss="hnsw")


def test_ctrl_c_through_the_cli_keeps_what_was_committed(tiny_model, library, tmp_path):
    idx = tmp_path / "idx"
    cli = "from videococa.cli import run\nrun()\n"  # what `python -m videococa` runs
    args = ["index", str(library), "--index", str(idx), "--batch-size", "1", "--workers", "1", "--json"]
    with _paused_after(3, cli, args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    meta = (idx / "vectors.json").read_text()
    with VideoIndex(idx) as index:  # FAISS was saved on the way out: it matches SQLite, no rebuild needed
        assert f'"generation": {index.generation}' in meta
        assert len(index.files()) == 3 == len(index) == index._faiss.ntotal
    _rerun_completes(idx, tiny_model, library, committed=3)


def test_index_command_records_the_faiss_choice(easy_videos, tmp_path, capsys):
    from videococa.cli import main  # noqa: PLC0415 - only this test runs the CLI

    idx = tmp_path / "idx"
    assert main(["index", *easy_videos[:2], "--index", str(idx), "--frames", "2", "--faiss", "ivfpq", "--json"]) == 0
    assert VideoIndex.recorded_settings(idx)["faiss"] == "ivfpq"  # exact below 100k entries; ivfpq from there on
    assert main(["index", easy_videos[2], "--index", str(idx), "--frames", "2", "--json"]) == 0  # kept when not given
    assert VideoIndex.recorded_settings(idx)["faiss"] == "ivfpq"
    assert main(["index", "--index", str(idx), "--frames", "2", "--faiss", "ivf", easy_videos[3], "--json"]) == 0
    assert VideoIndex.recorded_settings(idx)["faiss"] == "ivf"
    capsys.readouterr()
