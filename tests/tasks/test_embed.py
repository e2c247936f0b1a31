"""Embeddings to Parquet: rows, protocol metadata, segments, failures, interruption."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from videococa import embed_to_parquet, read_video
from videococa.tasks import embed as embed_mod


def test_rows_match_the_model_and_the_protocol_is_recorded(tiny_model, easy_videos, tmp_path):
    out = tmp_path / "e.parquet"
    bad = tmp_path / "bad.mp4"
    bad.write_text("nope")
    report = embed_to_parquet(tiny_model, [*easy_videos[:2], bad], out, frames=4)
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
    report = embed_to_parquet(tiny_model, easy_videos[:1], tmp_path / "s.parquet", frames=2, segment=1.0)
    t = pq.read_table(tmp_path / "s.parquet")
    assert report.rows == 2 and list(zip(t.column("start").to_pylist(), t.column("end").to_pylist())) == [(0, 1), (1, 2)]


def test_an_interrupted_run_keeps_the_rows_done(tiny_model, easy_videos, tmp_path, monkeypatch):
    real = embed_mod.encode_videos

    def interrupted(*args, **kwargs):
        for i, item in enumerate(real(*args, **kwargs)):
            if i == 3:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(embed_mod, "encode_videos", interrupted)
    report = embed_to_parquet(tiny_model, easy_videos, tmp_path / "i.parquet", frames=2, row_group=2)
    assert report.interrupted and report.rows == 3
    assert pq.read_table(tmp_path / "i.parquet").column("path").to_pylist() == easy_videos[:3]


def test_out_must_not_be_a_directory(tiny_model, easy_videos, tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        embed_to_parquet(tiny_model, easy_videos[:1], tmp_path)
