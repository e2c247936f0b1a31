"""The index under a hostile user: concurrent writers, vanished roots, moved libraries, odd files, damage."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import numpy as np
import pytest

from videococa import IndexStoreError, VideoIndex
from videococa.files import FileLock
from videococa.index.store import faiss_ids
from videococa.testing import write_video

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def library(tmp_path, easy_videos):
    lib = tmp_path / "library"
    lib.mkdir()
    for p in easy_videos:
        shutil.copy2(p, lib / Path(p).name)  # copy2 keeps mtimes, as `mv` and `cp -p` do
    return lib


def _sqlite_ids(idx: Path) -> list[int]:
    db = sqlite3.connect(idx / "index.sqlite")
    try:
        return [r[0] for r in db.execute("SELECT id FROM entries ORDER BY id")]
    finally:
        db.close()


def _consistent(idx: Path) -> None:
    """SQLite ids == ids of the FAISS file on disk == ids searched in memory; every indexed file exists."""
    import faiss

    want = _sqlite_ids(idx)
    assert faiss_ids(faiss.read_index(str(idx / "vectors.faiss"))).tolist() == want
    with VideoIndex(idx) as index:
        assert index._ids.tolist() == want and index._faiss.ntotal == len(want)
        assert all(os.path.exists(f["path"]) for f in index.files())


def _wait_for_line(stream, needle: str, timeout: float = 240) -> str:
    """Read lines from a child's pipe until one contains `needle` (a hand-off, not a sleep)."""
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        line = stream.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"never saw {needle!r}; got {''.join(seen)!r}")


# --------------------------------------------------------------------------- 1. concurrent writers
def test_a_second_writer_waits_for_the_first_and_nothing_is_lost(tiny_model, library, tmp_path):
    idx = tmp_path / "idx"
    other = tmp_path / "other"
    other.mkdir()
    for name in ("blue_square.mp4", "red_circle.mp4", "yellow_star.mp4"):
        shutil.copy2(library / name, other / f"b_{name}")
    with VideoIndex(idx, tiny_model) as index:
        index.add([library / "red_circle.mp4"])
    lock = FileLock(idx / "index.lock")
    lock.acquire()  # this test process is "the first writer"
    try:
        child = subprocess.Popen([sys.executable, "-m", "videococa", "index", str(other), "--index", str(idx),
                                  "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = _wait_for_line(child.stderr, "waiting")
        assert f"another process is indexing {idx} (pid {os.getpid()}); waiting" in line
        assert child.poll() is None  # it waits, it does not write
        assert len(_sqlite_ids(idx)) == 1
    finally:
        lock.release()
    out, err = child.communicate(timeout=240)
    assert child.returncode == 0, err
    assert json.loads(out)["entries"] == 4
    with VideoIndex(idx, tiny_model) as index:  # the first writer's own run now waits its turn and adds the rest
        index.update([library])
        assert len(index) == 8
        hits = index.search("a yellow star", top_k=8)
        assert len(hits) == 8 and {Path(h.path).name for h in hits[:2]} == {"yellow_star.mp4", "b_yellow_star.mp4"}
    _consistent(idx)


def test_two_writer_processes_at_once_both_land(tiny_model, library, tmp_path):
    idx = tmp_path / "idx"
    libs = []
    for k in range(2):
        d = tmp_path / f"lib{k}"
        d.mkdir()
        for p in library.iterdir():
            shutil.copy2(p, d / f"{k}_{p.name}")
        libs.append(d)
    go = tmp_path / "go"
    script = textwrap.dedent("""
        import os, sys, time, videococa
        m = videococa.load_model("videococa-tiny")
        print("ready", flush=True)
        while not os.path.exists(sys.argv[3]):
            time.sleep(0.01)
        with videococa.VideoIndex(sys.argv[2], m) as index:  # both create the new index at the same moment
            index.update([sys.argv[1]], batch_size=1, workers=1)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(d), str(idx), str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for d in libs]
    for p in procs:
        _wait_for_line(p.stdout, "ready")
    go.touch()  # the barrier: both are loaded and start together
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0 and "IntegrityError" not in err, err
    with VideoIndex(idx, tiny_model) as index:
        assert len(index) == 10 and len(index.files()) == 10
        r = index.update(libs)
        assert len(r.unchanged) == 10 and not r.added  # a re-run has nothing to repair
        for d in libs:
            hits = index.search("a purple hexagon", top_k=10)
            assert str(d / f"{d.name[-1]}_purple_hexagon.mp4") in {h.path for h in hits}
    _consistent(idx)


def test_a_stale_faiss_file_with_the_right_stamp_and_count_is_still_rebuilt(tiny_model, library, tmp_path):
    idx = tmp_path / "idx"
    with VideoIndex(idx, tiny_model) as index:
        index.add(sorted(library.iterdir())[:4])
    saved = {n: (idx / n).read_bytes() for n in ("vectors.faiss", "vectors.json")}
    with VideoIndex(idx, tiny_model) as index:  # same count, other content: one file out, another in
        index.remove([sorted(library.iterdir())[0]])
        index.add([sorted(library.iterdir())[4]])
        gen = index.generation
        want = index.search("a green triangle", top_k=4)
    (idx / "vectors.faiss").write_bytes(saved["vectors.faiss"])
    meta = json.loads(saved["vectors.json"])
    (idx / "vectors.json").write_text(json.dumps({**meta, "generation": gen}))  # what the old check trusted
    with VideoIndex(idx, tiny_model) as index:
        assert index.search("a green triangle", top_k=4) == want
    _consistent(idx)


# --------------------------------------------------------------------------- 2. vanished and empty roots
def test_a_missing_or_empty_root_keeps_its_entries(tiny_model, library, tmp_path):
    idx = tmp_path / "idx"
    with VideoIndex(idx, tiny_model) as index:
        index.update([library])
    away = tmp_path / "unplugged"
    library.rename(away)  # the drive is unplugged
    with VideoIndex(idx, tiny_model) as index:
        r = index.update([library])
        assert r.removed == [] and len(index) == 5
        (f,) = r.failed
        assert "library root is missing" in f.reason and "5 indexed files are kept" in f.reason
        assert index.search("a red circle", top_k=5) == []  # gone from disk: never returned
    library.mkdir()  # a bare mount point
    with VideoIndex(idx, tiny_model) as index:
        r = index.update([library])
        assert r.removed == [] and len(index) == 5 and "5 indexed files are kept" in r.failed[0].reason
    library.rmdir()
    away.rename(library)  # the drive is back: nothing is embedded again
    with VideoIndex(idx, tiny_model) as index:
        r = index.update([library])
        assert (len(r.unchanged), r.added, r.updated, r.failed) == (5, [], [], [])
        assert Path(index.search("a red circle", top_k=1)[0].path).name == "red_circle.mp4"
        (library / "red_circle.mp4").unlink()  # a root that exists and lost a file is still pruned
        r = index.update([library])
        assert r.removed == [str(library / "red_circle.mp4")] and len(index) == 4


# --------------------------------------------------------------------------- 4. moved library
def test_a_moved_library_is_recognised_not_re_embedded(tiny_model, library, tmp_path):
    idx = tmp_path / "idx"
    with VideoIndex(idx, tiny_model) as index:
        index.update([library])
        ids_before = sorted(_sqlite_ids(idx))
    moved = tmp_path / "library2"
    library.rename(moved)
    with VideoIndex(idx, tiny_model) as index:
        assert index.search("a yellow star", top_k=5) == []  # the old paths are gone: nothing to show
        r = index.update([moved])
        assert (r.added, r.updated, len(r.moved)) == ([], [], 5)
        assert sorted(_sqlite_ids(idx)) == ids_before  # the same entries, not new embeddings
        hits = index.search("a yellow star", top_k=5)
        assert len(hits) == 5 and all(h.path.startswith(str(moved) + os.sep) for h in hits)
        assert Path(hits[0].path).name == "yellow_star.mp4"
    _consistent(idx)


def test_a_copy_with_another_mtime_is_embedded_not_taken_for_a_move(tiny_model, library, tmp_path):
    idx = tmp_path / "idx"
    with VideoIndex(idx, tiny_model) as index:
        index.update([library / "red_circle.mp4"])
        (library / "red_circle.mp4").rename(tmp_path / "x.mp4")
        shutil.copy(tmp_path / "x.mp4", library / "again.mp4")  # new mtime: not provably the same file
        r = index.update([library / "again.mp4"])
        assert r.added == [str(library / "again.mp4")] and not r.moved


# --------------------------------------------------------------------------- 5, 6, 9, 10, 11: odd files
def test_odd_files_in_the_library(tiny_model, library, tmp_path):
    (library / "party").mkdir()
    os.mkfifo(library / "stream.mp4")  # opening it would block forever
    shutil.copy2(library / "red_circle.mp4", library / "birthday.party.mp4")
    shutil.copy2(library / "blue_square.mp4", library / "party" / "lecture.part1.mp4")
    odd = os.path.join(os.fsencode(library), b"clip-\xff\xfe.mp4")  # not UTF-8
    shutil.copy2(library / "green_triangle.mp4", odd)
    real = tmp_path / "elsewhere"
    real.mkdir()
    shutil.copy2(library / "yellow_star.mp4", real / "linked_star.mp4")
    os.symlink(real, library / "linked_dir")  # a symlinked directory is followed
    os.symlink(library / "purple_hexagon.mp4", library / "z_alias.mp4")  # a second name of one file
    os.symlink(library, library / "party" / "loop")  # a loop back to the root
    os.symlink(tmp_path / "nothing.mp4", library / "broken.mp4")
    with VideoIndex(tmp_path / "idx", tiny_model) as index:
        r = index.update([library], workers=2)
        names = {os.fsencode(Path(p).name) for p in r.added}
        assert names == {b"red_circle.mp4", b"blue_square.mp4", b"green_triangle.mp4", b"yellow_star.mp4",
                         b"purple_hexagon.mp4", b"birthday.party.mp4", b"lecture.part1.mp4", b"clip-\xff\xfe.mp4",
                         b"linked_star.mp4"}
        assert not r.failed
        notes = {Path(n.path).name: n.reason for n in r.notes}
        assert "FIFO" in notes["stream.mp4"]
        assert "same file as" in notes["z_alias.mp4"] and "purple_hexagon.mp4" in notes["z_alias.mp4"]
        assert "loop" in notes["loop"]
        assert "broken symbolic link" in notes["broken.mp4"]
        paths = {os.fsencode(f["path"]) for f in index.files()}
        assert odd in paths  # stored losslessly
        hit = index.search("a green triangle", top_k=9)
        assert odd in {os.fsencode(h.path) for h in hit}
        r = index.update([library])
        assert len(r.unchanged) == 9 and not r.added and not r.removed  # the odd name survives a re-run


def test_an_animated_gif_is_read_as_a_video(tiny_model, tmp_path):
    from PIL import Image

    from videococa.testing import pattern
    from videococa import read_video

    frames = [Image.fromarray(pattern(i, 60, 80)) for i in range(20)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    clip = read_video(gif, 4, size=32)
    assert clip.info.duration == pytest.approx(2.0) and not clip.info.is_image
    assert clip.timestamps == pytest.approx([0.2, 0.7, 1.2, 1.7])
    assert len({f.sum().item() for f in clip.frames}) == 4  # four different frames, not one still
    frames[0].save(tmp_path / "still.gif")
    assert read_video(tmp_path / "still.gif", 2, size=32).info.is_image


# --------------------------------------------------------------------------- 8. truncated files
@pytest.mark.parametrize("suffix,codec,options", [("mp4", "libx264", {"movflags": "faststart"}),
                                                   ("mkv", "libx264", {}), ("webm", "libvpx-vp9", {})])
def test_a_truncated_file_is_indexed_only_as_far_as_its_data(tiny_model, tmp_path, suffix, codec, options):
    from videococa.testing import pattern
    from videococa import read_clips

    full = tmp_path / f"full.{suffix}"
    with av.open(str(full), "w", options=options) as out:
        s = out.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt, s.options = 96, 64, "yuv420p", {"g": "25"}
        for i in range(250):  # 10 s
            for p in s.encode(av.VideoFrame.from_ndarray(pattern(i, 64, 96), format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    cut = tmp_path / f"cut.{suffix}"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.4)])
    clips = read_clips(cut, 2, segment=2.0, size=32)
    end = clips[-1].end
    assert clips[0].info.duration == 10.0 and 2.0 < end < 6.0  # the header says 10 s; the data ends earlier
    assert all(c.truncated_at == end for c in clips) and len(clips) == int(np.ceil(end / 2))
    assert max(t for c in clips for t in c.timestamps) <= end  # no window past the data
    assert read_clips(full, 2, segment=2.0, size=32)[-1].truncated_at is None
    with VideoIndex(tmp_path / "idx", tiny_model, segment=2.0, num_frames=2) as index:
        r = index.update([cut])
        assert r.added == [str(cut)] and "truncated" in r.notes[0].reason
        assert len(index) == len(clips) and index.files()[0]["duration"] == end


# --------------------------------------------------------------------------- 7. damage
def test_a_zero_length_record_is_an_error_not_a_fresh_start(tiny_model, library, tmp_path):
    idx = tmp_path / "idx"
    with VideoIndex(idx, tiny_model) as index:
        index.add([library / "red_circle.mp4"])
    for f in idx.glob("index.sqlite*"):
        f.unlink()
    (idx / "index.sqlite").write_bytes(b"")
    for kwargs in ({}, {"model": tiny_model}):
        with pytest.raises(IndexStoreError, match=r"is empty \(0 bytes\).*videococa index --repair"):
            VideoIndex(idx, **kwargs)
    report = VideoIndex.repair(idx, tiny_model)
    assert report.fresh and Path(report.damaged_copy).exists()
    with VideoIndex(idx, tiny_model) as index:
        assert len(index) == 0 and len(index.update([library]).added) == 5


def _damage_one_entries_page(db: Path) -> None:
    """Zero one leaf page of the entries table (after the WAL was checkpointed)."""
    con = sqlite3.connect(db)
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name='entries'").fetchone()[0]
    con.close()
    data = bytearray(db.read_bytes())
    page = data[(root - 1) * page_size : root * page_size]
    assert page[0] == 0x05, "the entries table should span several leaves under one interior page"
    cells = int.from_bytes(page[3:5], "big")
    offsets = [int.from_bytes(page[12 + 2 * k : 14 + 2 * k], "big") for k in range(cells)]
    leaves = [int.from_bytes(page[o : o + 4], "big") for o in offsets]  # each cell starts with its child page
    victim = leaves[len(leaves) // 2]
    data[(victim - 1) * page_size : victim * page_size] = bytes(page_size)  # a zeroed sector
    db.write_bytes(bytes(data))


def test_a_damaged_page_is_reported_and_repair_salvages_the_rest(tiny_model, library, tmp_path):
    idx = tmp_path / "idx"
    with VideoIndex(idx, tiny_model, segment=0.25, num_frames=2) as index:
        index.update([library])
        assert len(index) == 40
    sqlite3.connect(idx / "index.sqlite").execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    _damage_one_entries_page(idx / "index.sqlite")
    (idx / "vectors.faiss").unlink()  # a rebuild is needed, which reads every entry
    with pytest.raises(IndexStoreError, match=r"is damaged \(.*\); run `videococa index --repair --index"):
        VideoIndex(idx, tiny_model)
    report = VideoIndex.repair(idx, tiny_model)
    assert not report.fresh and 1 <= len(report.files_dropped) < 5
    assert report.files_kept == 5 - len(report.files_dropped) and report.entries_kept == 8 * report.files_kept
    with VideoIndex(idx, tiny_model) as index:
        r = index.update([library])
        assert sorted(r.added) == sorted(report.files_dropped) and len(r.unchanged) == report.files_kept
        assert len(index) == 40
    _consistent(idx)


def test_the_index_folder_deleted_mid_run(tiny_model, library, tmp_path, monkeypatch):
    from videococa.index import store

    idx = tmp_path / "idx"
    real = store.encode_files

    def delete_after_first(*args, **kwargs):
        for i, item in enumerate(real(*args, **kwargs)):
            if i == 1:
                shutil.rmtree(idx)
            yield item

    monkeypatch.setattr(store, "encode_files", delete_after_first)
    with VideoIndex(idx, tiny_model) as index:
        with pytest.raises(IndexStoreError, match="was deleted or replaced while this process was using it"):
            index.update([library], batch_size=1)


# --------------------------------------------------------------------------- 12. numbers
def test_bad_numbers_are_refused_before_anything_is_written(tiny_model, tmp_path):
    for bad in (float("inf"), float("nan"), -1.0, 0.0, 1e-300, 1e9):
        with pytest.raises(ValueError, match="segment must be a number of seconds from 0.1 to 86400"):
            VideoIndex(tmp_path / "idx", tiny_model, segment=bad)
    with pytest.raises(ValueError, match="frames must be an integer from 1 to 64, got 100000"):
        VideoIndex(tmp_path / "idx", tiny_model, num_frames=100000)
    assert not (tmp_path / "idx").exists()
    with VideoIndex(tmp_path / "old", tiny_model) as index:  # an index an older videococa locked with inf
        index.db.execute("UPDATE settings SET value = 'inf' WHERE key = 'segment'")
    with pytest.raises(IndexStoreError, match="records an unusable segment length 'inf'"):
        VideoIndex(tmp_path / "old", tiny_model)


# --------------------------------------------------------------------------- 13. memory
def test_long_videos_stream_through_the_encoder_in_bounded_chunks(tiny_model, tmp_path, monkeypatch):
    from videococa import limits
    from videococa.tasks import encode_videos
    from videococa.video import loader, reader

    long = write_video(tmp_path / "long.mp4", num_frames=500, fps=25, width=96, height=64, gop=25)  # 20 s
    monkeypatch.setattr(loader, "CHUNK_FRAMES", 16)
    sizes = []
    real = reader._read

    def counting(windows_times, *args):
        sizes.append(sum(len(t) for t in windows_times))
        return real(windows_times, *args)

    monkeypatch.setattr(reader, "_read", counting)
    monkeypatch.setattr(reader, "CHUNK_FRAMES", 16)
    chunks = list(reader.iter_clips(long, 4, segment=0.5, size=32))
    assert [len(c) for c in chunks] == [4] * 10 and max(sizes) == 16  # 40 windows, never more than 16 frames
    sizes.clear()
    out = list(encode_videos(tiny_model, [long], num_frames=4, segment=0.5, batch_size=1, workers=1))
    assert len(out) == 40 and [o.clip.start for o in out] == [k * 0.5 for k in range(40)]
    assert max(sizes) == 16 and all(o.clip.frames.numel() == 0 for o in out)  # frames released once encoded
    assert limits.CHUNK_FRAMES >= 64


def test_a_file_failing_part_way_leaves_no_partial_entries(tiny_model, library, tmp_path, monkeypatch):
    from videococa.errors import VideoDecodeError
    from videococa.video import loader, reader

    real = loader._read_one

    def fail_after_first_chunk(path, kwargs):
        gen = real(path, kwargs)
        yield next(gen)
        if path.endswith("blue_square.mp4"):
            raise VideoDecodeError(f"{path!r}: simulated failure half-way")
        yield from gen

    monkeypatch.setattr(loader, "_read_one", fail_after_first_chunk)
    monkeypatch.setattr(loader, "CHUNK_FRAMES", 4)  # 2 windows per chunk of 2 frames each
    monkeypatch.setattr(reader, "CHUNK_FRAMES", 4)
    with VideoIndex(tmp_path / "idx", tiny_model, segment=0.25, num_frames=2) as index:
        r = index.update([library], batch_size=1)
        assert [Path(f.path).name for f in r.failed] == ["blue_square.mp4"]
        assert {Path(f["path"]).name: f["entries"] for f in index.files()} == {
            "green_triangle.mp4": 8, "purple_hexagon.mp4": 8, "red_circle.mp4": 8, "yellow_star.mp4": 8}


def test_faiss_ids_reads_exact_and_ivf_indexes():
    from videococa.index import build_faiss

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 16)).astype(np.float32)
    ids = rng.permutation(np.arange(10, 3010)).astype(np.int64)
    for limit, kind in ((10_000, "exact"), (1000, "ivf")):
        index, got = build_faiss(x, ids, 16, exact_limit=limit)
        assert got == kind and faiss_ids(index).tolist() == sorted(ids.tolist())
        index.remove_ids(np.array([10, 11, 3009], dtype=np.int64))
        assert faiss_ids(index).tolist() == sorted(set(ids.tolist()) - {10, 11, 3009})


# --------------------------------------------------------------------------- review findings
def test_repair_of_an_index_whose_path_has_uri_characters(tiny_model, library, tmp_path):
    idx = tmp_path / "a#b?c%d"
    with VideoIndex(idx, tiny_model) as index:
        index.update([library])
    report = VideoIndex.repair(idx, tiny_model)
    assert not report.fresh and report.files_kept == 5 and not list(tmp_path.glob("a"))
    with VideoIndex(idx, tiny_model) as index:
        assert len(index) == 5


def test_a_failed_repair_leaves_the_index_as_it_was(tiny_model, library, tmp_path, monkeypatch):
    from videococa.index import store

    idx = tmp_path / "idx"
    with VideoIndex(idx, tiny_model) as index:
        index.update([library])
    before = (idx / "index.sqlite").read_bytes()

    def disk_full(*args, **kwargs):
        err = sqlite3.OperationalError("database or disk is full")
        err.sqlite_errorcode = sqlite3.SQLITE_FULL
        raise err

    monkeypatch.setattr(store, "_write_salvage", disk_full)
    with pytest.raises(IndexStoreError, match="cannot repair .*: the disk is full; the index was left as it was"):
        VideoIndex.repair(idx, tiny_model)
    assert (idx / "index.sqlite").read_bytes() == before and not list(idx.glob("*.damaged-*"))
    monkeypatch.undo()
    with VideoIndex(idx, tiny_model) as index:
        assert len(index) == 5


def test_repair_never_reuses_the_ids_of_lost_entries(tiny_model, library, tmp_path):
    idx = tmp_path / "idx"
    with VideoIndex(idx, tiny_model) as index:
        index.update([library])
        top = max(_sqlite_ids(idx))
        index.db.execute("DELETE FROM entries WHERE id = ?", (top,))  # the newest entry is lost
    report = VideoIndex.repair(idx, tiny_model)
    assert report.files_kept == 4 and len(report.files_dropped) == 1
    with VideoIndex(idx, tiny_model) as index:
        index.update([library])
    assert min(set(_sqlite_ids(idx)) - set(range(top))) > top


def test_a_folder_that_cannot_be_listed_is_not_pruned(tiny_model, library, tmp_path, monkeypatch):
    from videococa import paths

    sub = library / "sub"
    sub.mkdir()
    for name in ("red_circle.mp4", "blue_square.mp4"):
        (library / name).rename(sub / name)
    idx = tmp_path / "idx"
    with VideoIndex(idx, tiny_model) as index:
        index.update([library])
        assert len(index) == 5
    real = os.scandir

    def unreachable(path="."):  # a dead network mount: listing fails, the files are not gone
        if os.fspath(path) == str(sub):
            raise OSError(107, "Transport endpoint is not connected")
        return real(path)

    monkeypatch.setattr(paths.os, "scandir", unreachable)
    with VideoIndex(idx, tiny_model) as index:
        r = index.update([library])
        assert r.removed == [] and len(index) == 5
        (f,) = r.failed
        assert f.path == str(sub) and "Transport endpoint is not connected" in f.reason and "kept" in f.reason


def test_a_new_link_never_makes_an_indexed_file_count_twice(tiny_model, library, tmp_path):
    movies = library / "movies"
    movies.mkdir()
    (library / "red_circle.mp4").rename(movies / "red_circle.mp4")
    with VideoIndex(tmp_path / "idx", tiny_model) as index:
        index.update([library])
        os.symlink(movies, library / "0link")  # sorts before "movies"
        r = index.update([library])
        assert not r.added and not r.removed and len(r.unchanged) == 5 and len(index) == 5
        assert [Path(n.path).parent.name for n in r.notes] == ["0link"]


def test_search_looks_past_many_missing_files_in_bounded_queries(tiny_model, library, tmp_path, monkeypatch):
    from videococa.index import store

    monkeypatch.setattr(store, "SQL_CHUNK", 2)  # several id chunks per query, as with 900 in a large index
    idx = tmp_path / "idx"
    with VideoIndex(idx, tiny_model, segment=0.25, num_frames=2) as index:
        index.update([library])
        for name in ("red_circle.mp4", "blue_square.mp4", "green_triangle.mp4", "yellow_star.mp4"):
            (library / name).unlink()
        hits = index.search("a red circle", top_k=3)
        assert len(hits) == 3 and {Path(h.path).name for h in hits} == {"purple_hexagon.mp4"}


def test_a_faiss_file_from_an_earlier_index_at_the_same_path_is_not_trusted(tiny_model, library, tmp_path):
    idx = tmp_path / "idx"
    with VideoIndex(idx, tiny_model) as index:
        index.update([library / "red_circle.mp4", library / "blue_square.mp4"])
    old = {n: (idx / n).read_bytes() for n in ("vectors.faiss", "vectors.json")}
    shutil.rmtree(idx)
    with VideoIndex(idx, tiny_model) as index:  # made anew: its entry ids start at 1 again
        index.update([library / "yellow_star.mp4", library / "green_triangle.mp4"])
    for n, data in old.items():
        (idx / n).write_bytes(data)
    with VideoIndex(idx, tiny_model) as index:
        assert Path(index.search("a red circle", top_k=1)[0].path).name in {"yellow_star.mp4", "green_triangle.mp4"}
        assert {Path(h.path).name for h in index.search("a yellow star", top_k=2)} == {"yellow_star.mp4",
                                                                                     "green_triangle.mp4"}


def test_searching_an_index_that_cannot_be_written(tiny_model, library, tmp_path, monkeypatch):
    idx = tmp_path / "idx"
    with VideoIndex(idx, tiny_model) as index:
        index.update([library])
    (idx / "vectors.faiss").unlink()  # needs a rebuild, which it cannot save

    def refuse(self, *, blocking=True, on_wait=None):
        raise PermissionError(13, "Permission denied", str(self.path))

    monkeypatch.setattr(FileLock, "acquire", refuse)
    with VideoIndex(idx, tiny_model, create=False) as index:
        assert Path(index.search("a yellow star", top_k=1)[0].path).name == "yellow_star.mp4"


def test_a_long_truncated_file_is_reported_when_its_last_chunk_finds_the_cut(tiny_model, tmp_path, monkeypatch):
    from videococa.testing import pattern
    from videococa.video import loader, reader

    monkeypatch.setattr(reader, "CHUNK_FRAMES", 4)  # 2 windows per chunk: the cut is found in a later chunk
    monkeypatch.setattr(loader, "CHUNK_FRAMES", 4)
    full = tmp_path / "full.mkv"
    with av.open(str(full), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt, s.options = 96, 64, "yuv420p", {"g": "25"}
        for i in range(250):
            for p in s.encode(av.VideoFrame.from_ndarray(pattern(i, 64, 96), format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.6)])
    with VideoIndex(tmp_path / "idx", tiny_model, segment=1.0, num_frames=2) as index:
        r = index.update([cut])
        (f,) = index.files()
        assert "truncated" in r.notes[0].reason and 4.0 < f["duration"] < 8.0
        assert f["entries"] == int(np.ceil(f["duration"]))


def test_a_corrupt_duration_does_not_plan_billions_of_windows():
    from videococa.video.sampling import clip_windows

    with pytest.raises(ValueError, match="more than 1,000,000 windows"):
        clip_windows(1e12, segment=1.0)
