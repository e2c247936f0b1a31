"""Embeddings to Parquet: rows, protocol metadata, segments, failures, interruption."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from videococa import embed_to_parquet, read_video
from videococa.tasks import batch as batch_mod


def test_rows_match_the_model_and_the_protocol_is_recorded(tiny_model, easy_videos, tmp_path):
    out = tmp_path / "e.parquet"
    bad = tmp_path / "bad.mp4"
    bad.write_text("nope")
    report = embed_to_parquet(tiny_model, [*easy_videos[:2], bad], out, num_frames=4)
    assert (report.rows, report.videos, [f.path for f in report.failed]) == (2, 2, [str(bad)])
    table = pq.read_table(out)
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert meta["videococa.model"] == "videococa-tiny" and meta["videococa.frames"] == "4"
    assert meta["videococa.fingerprint"] == tiny_model.fingerprint() and meta["videococa.pooling"] == "attentional"
    assert table.column("path").to_pylist() == easy_videos[:2]
    emb = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    info = tiny_model.info
    want = tiny_model.encode_video(torch.stack([read_video(p, 4, size=info.image_size).frames for p in easy_videos[:2]]))
    np.testing.assert_allclose(emb, want.numpy(), atol=1e-5)
    assert table.column("width").to_pylist() == [96, 96] and table.column("duration").to_pylist() == [2.0, 2.0]
    assert not out.with_name(out.name + ".part").exists()


def test_segments_give_one_row_per_window(tiny_model, easy_videos, tmp_path):
    report = embed_to_parquet(tiny_model, easy_videos[:1], tmp_path / "s.parquet", num_frames=2, segment=1.0)
    t = pq.read_table(tmp_path / "s.parquet")
    assert report.rows == 2 and list(zip(t.column("start").to_pylist(), t.column("end").to_pylist())) == [(0, 1), (1, 2)]


def _interrupt_after(monkeypatch, n: int) -> None:
    """The next embed run gets Ctrl-C after its n-th result."""
    real = batch_mod.encode_videos

    def interrupted(*args, **kwargs):
        for i, item in enumerate(real(*args, **kwargs)):
            if i == n:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(batch_mod, "encode_videos", interrupted)


def test_an_interrupted_run_keeps_the_old_output_and_the_next_run_resumes(tiny_model, easy_videos, tmp_path,
                                                                         monkeypatch):
    out = tmp_path / "i.parquet"
    embed_to_parquet(tiny_model, easy_videos[:1], out, num_frames=2)  # a previous complete output
    before = out.read_bytes()
    _interrupt_after(monkeypatch, 3)
    report = embed_to_parquet(tiny_model, easy_videos, out, num_frames=2, row_group=2)
    assert report.interrupted and report.rows == 3 and report.videos == 3
    assert out.read_bytes() == before  # the old complete file is untouched
    assert pq.read_table(report.partial).column("path").to_pylist() == easy_videos[:3]
    monkeypatch.undo()
    calls = []
    real = batch_mod.encode_videos
    monkeypatch.setattr(batch_mod, "encode_videos", lambda model, paths, **kw: calls.append(list(paths)) or real(
        model, paths, **kw))
    report = embed_to_parquet(tiny_model, easy_videos, out, num_frames=2, row_group=2)
    assert calls == [easy_videos[3:]] and report.resumed == 3  # only the rest is embedded
    assert (report.rows, report.videos, report.interrupted) == (5, 5, False)
    assert pq.read_table(out).column("path").to_pylist() == easy_videos
    assert not Path(report.partial).exists() and sorted(p.name for p in tmp_path.iterdir()) == ["i.parquet"]
    full = embed_to_parquet(tiny_model, easy_videos, tmp_path / "full.parquet", num_frames=2)  # same rows as one run
    np.testing.assert_allclose(np.stack(pq.read_table(out).column("embedding").to_numpy(zero_copy_only=False)),
                               np.stack(pq.read_table(tmp_path / "full.parquet").column("embedding")
                                        .to_numpy(zero_copy_only=False)), atol=1e-6)
    assert full.resumed == 0


def test_a_partial_made_with_other_settings_is_not_resumed(tiny_model, easy_videos, tmp_path, monkeypatch):
    out = tmp_path / "o.parquet"
    _interrupt_after(monkeypatch, 2)
    assert embed_to_parquet(tiny_model, easy_videos, out, num_frames=2).interrupted
    monkeypatch.undo()
    report = embed_to_parquet(tiny_model, easy_videos[:2], out, num_frames=4)
    assert report.resumed == 0 and report.rows == 2
    assert any("other settings" in n.reason for n in report.notes)


def test_an_interrupted_segment_run_keeps_only_whole_videos(tiny_model, easy_videos, tmp_path, monkeypatch):
    _interrupt_after(monkeypatch, 3)  # 2 windows per video: the 4th result is the 2nd video's second window
    report = embed_to_parquet(tiny_model, easy_videos, tmp_path / "s.parquet", num_frames=2, segment=1.0, row_group=1)
    assert report.interrupted and report.videos == 1
    t = pq.read_table(report.partial)
    assert t.column("path").to_pylist() == [easy_videos[0]] * 2  # never half a video


def test_a_killed_runs_temp_file_is_removed_by_the_next_run(tiny_model, easy_videos, tmp_path):
    out = tmp_path / "k.parquet"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"k.parquet.{dead.pid}.part"
    stale.write_bytes(b"PAR1 half written")  # what kill -9 leaves
    report = embed_to_parquet(tiny_model, easy_videos[:1], out, num_frames=2)
    assert not stale.exists() and report.rows == 1
    assert any("left by a run that was killed" in n.reason for n in report.notes)


def test_a_non_utf8_file_name_is_embedded_and_kept_losslessly(tiny_model, easy_videos, tmp_path):
    odd = os.path.join(os.fsencode(tmp_path), b"caf\xe9-\xff.mp4")
    shutil.copy(easy_videos[0], odd)
    name = os.fsdecode(odd)
    report = embed_to_parquet(tiny_model, [name, easy_videos[1]], tmp_path / "u.parquet", num_frames=2)
    assert report.rows == 2 and not report.failed
    t = pq.read_table(tmp_path / "u.parquet")
    assert t.column("path_bytes").to_pylist()[0] == odd
    assert t.column("path").to_pylist()[0].endswith("caf\\xe9-\\xff.mp4")


def test_out_must_not_be_a_directory(tiny_model, easy_videos, tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        embed_to_parquet(tiny_model, easy_videos[:1], tmp_path)


def test_resume_keeps_only_rows_of_videos_asked_for_and_unchanged(tiny_model, easy_videos, tmp_path, monkeypatch):
    vids = []
    for p in easy_videos[:3]:
        shutil.copy2(p, tmp_path / Path(p).name)
        vids.append(str(tmp_path / Path(p).name))
    out = tmp_path / "r.parquet"
    _interrupt_after(monkeypatch, 2)
    assert embed_to_parquet(tiny_model, vids, out, num_frames=2).interrupted  # vids[0] and vids[1] in the partial
    monkeypatch.undo()
    os.utime(vids[1], ns=(time.time_ns(), time.time_ns() + 10**9))  # changed since: embedded again
    report = embed_to_parquet(tiny_model, [vids[1], vids[2]], out, num_frames=2)  # vids[0] no longer asked for
    assert report.resumed == 0 and pq.read_table(out).column("path").to_pylist() == [vids[1], vids[2]]


def test_embed_notes_a_truncated_file_and_gives_its_real_duration(tiny_model, tmp_path):
    from videococa.testing import write_video

    full = write_video(tmp_path / "full.mkv", num_frames=250, fps=25, width=96, height=64, gop=25)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(Path(full).read_bytes()[: int(Path(full).stat().st_size * 0.4)])
    report = embed_to_parquet(tiny_model, [str(cut)], tmp_path / "t.parquet", num_frames=2, segment=1.0)
    durations = set(pq.read_table(tmp_path / "t.parquet").column("duration").to_pylist())
    assert len(durations) == 1 and 2.0 < durations.pop() < 6.0
    assert "truncated" in report.notes[0].reason
