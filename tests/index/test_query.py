"""Search options of the index (filters, grouping, pages, thresholds, more-like-this), browsing, captions and
hybrid search; and the pure ranking rules of videococa.index.query on hand-built inputs."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from videococa import IndexStoreError, OptionError, VideoIndex
from videococa.index import SearchFilter
from videococa.index.query import fts_query, page, rrf


# ---------------------------------------------------------------- pure rules
def test_rrf_known_fusion():
    fused = rrf([[1, 2, 3], [3, 4]], k=0)
    # 1: 1/1; 2: 1/2; 3: 1/3 + 1/1; 4: 1/2 -> 3 first, then 1, then 2 and 4 tied (2 came first)
    assert [i for i, _ in fused] == [3, 1, 2, 4]
    assert fused[0][1] == pytest.approx(4 / 3)


def test_fts_query_quotes_words_and_drops_operators():
    assert fts_query('a "dog" OR cat*') == '"a" OR "dog" OR "or" OR "cat"'
    assert fts_query("  ?!  ") is None


def test_page_reads_no_further_than_needed():
    seen = []

    def gen():
        for i in range(100):
            seen.append(i)
            yield i

    assert page(gen(), 3, 2) == [3, 4] and seen == [0, 1, 2, 3, 4, 5]


def test_filter_rejects_impossible_and_bad_values():
    with pytest.raises(OptionError, match="min_duration .* greater than max_duration"):
        SearchFilter(min_duration=5, max_duration=1)
    with pytest.raises(OptionError, match="modified_after must be a finite number"):
        SearchFilter(modified_after=float("nan"))
    with pytest.raises(OptionError, match="path_glob"):
        SearchFilter(path_glob="")


# ---------------------------------------------------------------- on a real index
@pytest.fixture(scope="module")
def captioned(tmp_path_factory, tiny_model, easy_videos):
    lib = tmp_path_factory.mktemp("qlib")
    (lib / "sub").mkdir()
    for i, p in enumerate(easy_videos):
        shutil.copy(p, lib / ("sub" if i % 2 else "") / Path(p).name)
    old = lib / "red_circle.mp4"
    os.utime(old, (time.time() - 86400 * 10, time.time() - 86400 * 10))
    progress = []
    index = VideoIndex(tmp_path_factory.mktemp("qidx") / "index", tiny_model, segment=0.5, captions=True)
    index.add([lib], on_progress=lambda done, total, path: progress.append((done, total)))
    yield index, lib, progress
    index.close()


def test_progress_and_stats(captioned):
    index, _, progress = captioned
    assert progress[0] == (0, 5) and progress[-1] == (5, 5) and len(progress) == 6
    st = index.stats()
    assert st["videos"] == 5 and st["entries"] == len(index) > 5 and st["captions"] is True
    assert st["index_kind"] == "exact" and st["model"] == "videococa-tiny" and st["segment"] == "0.5"


def test_every_entry_has_a_caption_and_segments_are_ordered(captioned):
    index, _, _ = captioned
    videos, total = index.videos(limit=10)
    assert total == 5 and [v.path for v in videos] == sorted(v.path for v in videos)
    for v in videos:
        segs = index.segments(v.id)
        assert len(segs) == v.entries > 1
        assert [s.start for s in segs] == sorted(s.start for s in segs)
        assert all(isinstance(s.caption, str) and s.caption for s in segs)
        assert index.video(v.id) == v
    assert index.video(10**6) is None and index.segments(10**6) == [] and index.entry(10**9) is None


def test_videos_pages_and_filter(captioned):
    index, lib, _ = captioned
    first, total = index.videos(limit=2)
    second, _ = index.videos(offset=2, limit=2)
    assert total == 5 and len(first) == len(second) == 2 and not {v.id for v in first} & {v.id for v in second}
    sub, n = index.videos(where=SearchFilter(path_prefix=str(lib / "sub") + os.sep))
    assert n == 2 and all("/sub/" in v.path for v in sub)


def test_group_by_video_returns_each_file_once_at_its_best(captioned):
    index, _, _ = captioned
    moments = index.search("a red circle", top_k=50, hybrid=False)
    assert len({h.video_id for h in moments}) < len(moments)  # several segments of one file
    videos = index.search("a red circle", top_k=50, group_by="video", hybrid=False)
    assert len(videos) == 5 and len({h.video_id for h in videos}) == 5
    best = {}
    for h in moments:
        best.setdefault(h.video_id, h)
    assert [h.entry_id for h in videos] == [h.entry_id for h in sorted(best.values(), key=lambda h: -h.score)]
    assert Path(videos[0].path).name == "red_circle.mp4"


def test_pages_are_consecutive_slices(captioned):
    index, _, _ = captioned
    all_hits = index.search_embedding(index.entry_vector(1), top_k=len(index))
    pages = [index.search_embedding(index.entry_vector(1), top_k=3, offset=o) for o in range(0, len(index), 3)]
    assert [h.entry_id for p in pages for h in p] == [h.entry_id for h in all_hits]
    assert index.search_embedding(index.entry_vector(1), top_k=3, offset=len(index)) == []


def test_filters_threshold_and_more_like_this(captioned):
    index, lib, _ = captioned
    q = index.entry_vector(1)
    sub = index.search_embedding(q, top_k=100, where=SearchFilter(path_glob=str(lib / "sub" / "*")))
    assert sub and all("/sub/" in h.path for h in sub)
    recent = index.search_embedding(q, top_k=100, where=SearchFilter(modified_after=time.time() - 86400))
    assert recent and all(Path(h.path).name != "red_circle.mp4" for h in recent)
    assert len({h.video_id for h in recent}) == 4
    long_only = index.search_embedding(q, top_k=100, where=SearchFilter(min_duration=1000))
    assert long_only == []
    everything = index.search_embedding(q, top_k=100)
    cut = everything[len(everything) // 2].score
    above = index.search_embedding(q, top_k=100, min_score=cut)
    assert above and all(h.score >= cut for h in above) and len(above) < len(everything)
    like = index.search_entry(1, top_k=100)
    assert 1 not in {h.entry_id for h in like} and len(like) == len(index) - 1
    assert like[0].score >= like[-1].score
    with pytest.raises(IndexStoreError, match="no entry 999999"):
        index.search_entry(999999)
    with pytest.raises(OptionError, match="group_by"):
        index.search_embedding(q, group_by="file")
    with pytest.raises(OptionError, match="offset"):
        index.search_embedding(q, offset=-1)


def test_hybrid_search_finds_caption_words(captioned):
    index, _, _ = captioned
    seg = index.segments(index.videos(limit=1)[0][0].id)[-1]
    word = max(fts_query(seg.caption).replace('"', "").split(" OR "), key=len)
    hits = index.search(word, top_k=len(index))
    matched = [h for h in hits if h.caption_match]
    assert matched and all(word in h.caption.lower() for h in matched)
    assert seg.entry_id in {h.entry_id for h in matched}
    plain = index.search(word, top_k=len(index), hybrid=False)
    assert not any(h.caption_match for h in plain)
    assert {h.entry_id for h in plain} == {h.entry_id for h in hits}  # fusion reorders, loses nothing
    for h in matched:  # scores stay cosine similarities, the same as the embedding search gives
        assert h.score == pytest.approx(next(p.score for p in plain if p.entry_id == h.entry_id), abs=1e-5)


def test_captions_setting_is_recorded_and_checked(captioned, tiny_model):
    index, _, _ = captioned
    with pytest.raises(IndexStoreError, match="it stores a caption per entry"):
        VideoIndex(index.path, tiny_model, captions=False)
    with VideoIndex(index.path, tiny_model) as again:
        assert again.captions


def test_captions_leave_with_their_file_and_survive_repair(tmp_path, tiny_model, easy_videos):
    lib = tmp_path / "lib"
    lib.mkdir()
    for p in easy_videos[:2]:
        shutil.copy(p, lib)
    with VideoIndex(tmp_path / "idx", tiny_model, captions=True) as index:
        index.add([lib])
        (lib / Path(easy_videos[0]).name).unlink()
        index.update([lib])
        db = index.db
        assert db.execute("SELECT COUNT(*) FROM captions").fetchone()[0] == 1
        assert db.execute("SELECT COUNT(*) FROM captions_fts").fetchone()[0] == 1
    report = VideoIndex.repair(tmp_path / "idx", tiny_model)
    assert report.files_kept == 1
    with VideoIndex(tmp_path / "idx", tiny_model) as index:
        (seg,) = index.segments(index.videos()[0][0].id)
        assert seg.caption and index.search(seg.caption.split()[-1], top_k=1)[0].caption_match


def test_schema_2_index_migrates_to_captionless_3(tmp_path, tiny_model, easy_videos):
    with VideoIndex(tmp_path / "idx", tiny_model) as index:
        index.add(easy_videos[:1])
    db = sqlite3.connect(tmp_path / "idx" / "index.sqlite")
    for t in ("captions_ai", "captions_ad"):
        db.execute(f"DROP TRIGGER {t}")
    db.execute("DROP TABLE captions_fts")
    db.execute("DROP TABLE captions")
    db.execute("UPDATE settings SET value = '2' WHERE key = 'schema_version'")
    db.execute("DELETE FROM settings WHERE key = 'captions'")
    db.commit()
    db.close()
    with VideoIndex(tmp_path / "idx", tiny_model) as index:
        assert index.settings["schema_version"] == "3" and not index.captions
        assert index.search("a red circle", top_k=1)[0].caption is None
        index.add(easy_videos[1:2])
        assert len(index) == 2


def test_cli_index_captions_and_search_shows_them(tmp_path, easy_videos):
    import json
    import subprocess
    import sys

    idx = tmp_path / "idx"
    run = lambda *a: subprocess.run([sys.executable, "-m", "videococa", *a], capture_output=True, text=True)
    r = run("index", easy_videos[0], "--index", str(idx), "--captions")
    assert r.returncode == 0, r.stderr
    r = run("search", str(idx), "a red circle", "--json")
    (row,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert row["path"] == easy_videos[0] and isinstance(row["caption"], str) and row["caption"]
