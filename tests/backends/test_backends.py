"""The backend switch and what needs no Ray: lazy import, options, `index --from-parquet` on local embed output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from videococa import IndexStoreError, VideoIndex
from videococa.backends import RayOptions, check_backend, get_backend
from videococa.cli import main
from videococa.errors import OptionError
from videococa.index.store import INDEX_CAPTIONS
from videococa.tasks.embed import embed_to_parquet


def test_neither_the_package_nor_the_cli_imports_ray():
    code = ("import sys, videococa, videococa.cli, videococa.backends\n"
            "videococa.cli.build_parser()\n"
            "assert 'ray' not in sys.modules, sorted(m for m in sys.modules if m.startswith('ray'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_bad_backend_names_and_options_are_refused():
    with pytest.raises(OptionError, match="local, ray"):
        check_backend("spark")
    for bad in (dict(files_per_task=0), dict(actors=0), dict(gpus_per_actor=-1), dict(task_retries=-1)):
        with pytest.raises(OptionError, match=next(iter(bad))):
            RayOptions(**bad).check()


def test_ray_options_need_the_ray_backend(capsys, easy_videos, tmp_path):
    code = main(["embed", easy_videos[0], "--out", str(tmp_path / "e.parquet"), "--ray-address", "auto"])
    assert code == 2 and "need --backend ray" in capsys.readouterr().err


def test_the_local_backend_is_todays_path(tiny_model, easy_videos, tmp_path):
    with get_backend("local") as b:
        r = b.embed(tiny_model, easy_videos, tmp_path / "a.parquet", num_frames=2)
        items = list(b.encode_files(tiny_model, easy_videos[:2], num_frames=2))
    embed_to_parquet(tiny_model, easy_videos, tmp_path / "b.parquet", num_frames=2)
    assert r.videos == 5 and pq.read_table(tmp_path / "a.parquet").equals(pq.read_table(tmp_path / "b.parquet"))
    assert [x[0].clip.path for x in items] == easy_videos[:2]


def test_index_from_parquet_equals_indexing_the_files(tiny_model, easy_videos, tmp_path, capsys):
    out = tmp_path / "emb.parquet"
    embed_to_parquet(tiny_model, easy_videos, out, num_frames=2, segment=1.0, captions=INDEX_CAPTIONS)
    assert pq.read_table(out).column("caption").null_count == 0
    with VideoIndex(tmp_path / "direct", tiny_model, num_frames=2, segment=1.0, captions=True) as direct:
        direct.update(easy_videos)
        want = {q: [(h.path, h.start, h.end, h.caption) for h in direct.search(q, top_k=8)]
                for q in ("a red circle", "a blue square moving down")}
    code = main(["index", "--from-parquet", str(out), "--index", str(tmp_path / "merged"), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["added"] == 5 and summary["entries"] == len(pq.read_table(out))
    with VideoIndex(tmp_path / "merged", tiny_model) as merged:
        assert merged.captions and merged.num_frames == 2 and merged.segment == 1.0
        for q, hits in want.items():
            assert [(h.path, h.start, h.end, h.caption) for h in merged.search(q, top_k=8)] == hits
        again = merged.add_parquet(out)  # idempotent: nothing new
        assert len(again.unchanged) == 5 and not again.added and not again.updated


def test_index_from_parquet_refuses_other_settings_and_changed_files(tiny_model, easy_videos, tmp_path):
    videos = [shutil.copy2(p, tmp_path / Path(p).name) for p in easy_videos[:2]]
    out = tmp_path / "emb.parquet"
    embed_to_parquet(tiny_model, videos, out, num_frames=2)
    with VideoIndex(tmp_path / "idx", tiny_model, num_frames=4, segment=1.0, captions=True) as index:
        with pytest.raises(IndexStoreError) as err:
            index.add_parquet(out)
        assert all(w in str(err.value) for w in ("frames '2' (the index: '4')", "segment", "captions"))
        assert len(index) == 0
    later = os.stat(out).st_mtime_ns + 10**9
    os.utime(videos[1], ns=(later, later))  # edited after it was embedded
    with VideoIndex(tmp_path / "idx2", tiny_model, num_frames=2) as index:
        r = index.add_parquet(out)
        assert [f.path for f in r.failed] == [str(videos[1])] and "changed after" in r.failed[0].reason
        assert r.added == [str(videos[0])]
