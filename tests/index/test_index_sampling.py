"""Keyframes sampling for large libraries (issue 23 item 3): `index` and `embed` take it, record it, keep the
frame times actually used per entry, and refuse to mix it with uniform sampling; old artefacts read as uniform."""

from __future__ import annotations

import json
import sqlite3

import pyarrow.parquet as pq
import pytest

from videococa import IndexStoreError, VideoIndex, read_clips
from videococa.cli import main
from videococa.tasks.embed import embed_to_parquet, embedding_settings
from videococa.testing import keyframe_times, write_long_gop

FRAMES, SEGMENT = 4, 2.0


@pytest.fixture(scope="module")
def gop_video(tmp_path_factory):
    """4 s at 25 fps with a keyframe every second, in a folder of its own (a library)."""
    lib = tmp_path_factory.mktemp("gop-lib")
    write_long_gop(lib / "gop25.mp4")
    return lib / "gop25.mp4"


@pytest.fixture(scope="module")
def want_times(gop_video) -> list[list[float]]:
    """Per 2 s window, the keyframes nearest its 4 uniform sample times (0.25, 0.75, 1.25, 1.75 s, ...)."""
    keys = keyframe_times(gop_video)
    assert keys == pytest.approx([0.0, 1.0, 2.0, 3.0])
    got = [c.timestamps for c in read_clips(gop_video, FRAMES, segment=SEGMENT, sampling="keyframes")]
    assert got == [pytest.approx([0.0, 1.0, 1.0, 2.0]), pytest.approx([2.0, 3.0, 3.0, 3.0])]
    return got


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, [json.loads(l) for l in out.splitlines() if l.strip()], err


def test_keyframes_index_records_sampling_and_frame_times_and_searches(tiny_model, gop_video, want_times, easy_videos,
                                                                       tmp_path):
    with VideoIndex(tmp_path / "idx", tiny_model, num_frames=FRAMES, segment=SEGMENT, sampling="keyframes") as index:
        report = index.add([gop_video.parent, easy_videos[0]])
        assert len(report.added) == 2 and not report.failed
        assert index.settings["sampling"] == "keyframes" and index.stats()["sampling"] == "keyframes"
        vid = next(v.id for v in index.all_videos() if v.path == str(gop_video))
        segs = index.segments(vid)
        assert [s.frame_times for s in segs] == want_times
        hits = index.search_video(easy_videos[0], top_k=1)  # the query read with the index's keyframes sampling
        assert hits[0].path == easy_videos[0] and hits[0].score > 0.999
        assert index.search("a red circle", top_k=3)
    with pytest.raises(IndexStoreError, match="it uses keyframes frame sampling, not uniform"):
        VideoIndex(tmp_path / "idx", tiny_model, sampling="uniform")
    with VideoIndex(tmp_path / "idx", tiny_model) as again:  # no sampling given: the recorded one
        assert again.sampling == "keyframes" and len(again) == 3


def test_uniform_index_refuses_keyframes_and_old_indexes_read_as_uniform(tiny_model, gop_video, tmp_path):
    with VideoIndex(tmp_path / "idx", tiny_model, num_frames=FRAMES) as index:
        index.add([gop_video])
        assert index.sampling == "uniform" and index.segments(1)[0].frame_times is None
    with pytest.raises(IndexStoreError, match="it uses uniform frame sampling, not keyframes"):
        VideoIndex(tmp_path / "idx", tiny_model, sampling="keyframes")
    db = sqlite3.connect(tmp_path / "idx" / "index.sqlite")  # an index written before sampling was recorded
    with db:
        db.execute("DELETE FROM settings WHERE key = 'sampling'")
        db.execute("DROP TABLE frame_times")
    db.close()
    with VideoIndex(tmp_path / "idx", tiny_model, sampling="uniform") as old:
        assert old.sampling == "uniform" and old.segments(1)[0].frame_times is None
        assert old.update([gop_video]).unchanged == [str(gop_video)]
    with pytest.raises(IndexStoreError, match="uniform frame sampling, not keyframes"):
        VideoIndex(tmp_path / "idx", tiny_model, sampling="keyframes")


def test_embed_keyframes_writes_frame_times_and_merges_only_into_a_keyframes_index(tiny_model, gop_video, want_times,
                                                                                  tmp_path):
    out = tmp_path / "k.parquet"
    embed_to_parquet(tiny_model, [gop_video], out, num_frames=FRAMES, segment=SEGMENT, sampling="keyframes")
    table = pq.read_table(out)
    assert table.column("frame_times").to_pylist() == want_times
    assert embedding_settings(out)["sampling"] == "keyframes"
    uniform = tmp_path / "u.parquet"
    embed_to_parquet(tiny_model, [gop_video], uniform, num_frames=FRAMES, segment=SEGMENT)
    assert "frame_times" not in pq.read_schema(uniform).names and embedding_settings(uniform)["sampling"] == "uniform"
    with VideoIndex(tmp_path / "u-idx", tiny_model, num_frames=FRAMES, segment=SEGMENT) as index:
        with pytest.raises(IndexStoreError, match=r"sampling 'keyframes' \(the index: 'uniform'\)"):
            index.add_parquet(out)
        assert index.add_parquet(uniform).added == [str(gop_video)]
    with VideoIndex(tmp_path / "k-idx", tiny_model, num_frames=FRAMES, segment=SEGMENT, sampling="keyframes") as index:
        assert index.add_parquet(out).added == [str(gop_video)]
        assert [s.frame_times for s in index.segments(1)] == want_times
    # a file written before the sampling was recorded reads as uniform
    meta = {k: v for k, v in pq.read_schema(uniform).metadata.items() if k != b"videococa.sampling"}
    old = tmp_path / "old.parquet"
    pq.write_table(pq.read_table(uniform).replace_schema_metadata(meta), old)
    assert embedding_settings(old)["sampling"] == "uniform"


def test_repair_keeps_the_frame_times(tiny_model, gop_video, want_times, tmp_path):
    with VideoIndex(tmp_path / "idx", tiny_model, num_frames=FRAMES, segment=SEGMENT, sampling="keyframes") as index:
        index.add([gop_video])
    report = VideoIndex.repair(tmp_path / "idx", tiny_model)
    assert report.entries_kept == 2
    with VideoIndex(tmp_path / "idx", tiny_model, sampling="keyframes") as index:
        assert [s.frame_times for s in index.segments(1)] == want_times


def test_cli_index_and_embed_with_keyframes(capsys, gop_video, want_times, tmp_path):
    idx = str(tmp_path / "idx")
    common = ("--frames", str(FRAMES), "--segment", str(SEGMENT))
    code, (summary,), _ = _run(capsys, "index", str(gop_video.parent), "--index", idx, *common, "--sampling", "keyframes")
    assert code == 0 and (summary["added"], summary["entries"]) == (1, 2)
    code, hits, _ = _run(capsys, "search", idx, "a red circle", "--top-k", "2")
    assert code == 0 and {h["path"] for h in hits} == {str(gop_video)}
    code, _, err = _run(capsys, "index", str(gop_video.parent), "--index", idx, *common)  # uniform, the default
    assert code == 2 and "it uses keyframes frame sampling, not uniform" in err and "Traceback" not in err
    out = tmp_path / "e.parquet"
    code, (summary,), _ = _run(capsys, "embed", str(gop_video), "--out", str(out), *common, "--sampling", "keyframes")
    assert code == 0 and summary["rows"] == 2
    assert pq.read_table(out).column("frame_times").to_pylist() == want_times
    merged = str(tmp_path / "merged")
    code, (summary,), _ = _run(capsys, "index", "--from-parquet", str(out), "--index", merged)
    assert code == 0 and summary["added"] == 1
    with VideoIndex(merged) as index:
        assert index.sampling == "keyframes" and [s.frame_times for s in index.segments(1)] == want_times
