"""The Ray backend on a local Ray runtime this module starts (2 CPUs): its outputs are the local path's, bad files
land in the errors table, killed workers and a killed driver lose nothing and duplicate nothing.

Every run starts fresh worker processes that import torch and videococa, so the tests share runs where they can.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import pytest

ray = pytest.importorskip("ray", reason="the ray backend's tests need Ray Data: pip install 'videococa[ray]' "
                                        "(the test extra installs it, so CI runs them)")
pytest.importorskip("ray.data", reason="as above")
pq = pytest.importorskip("pyarrow.parquet")

from videococa import VideoIndex  # noqa: E402 - after the skips
from videococa.backends import RayOptions  # noqa: E402
from videococa.backends.raydata import ERRORS, SUCCESS, RayBackend  # noqa: E402
from videococa.cli import main  # noqa: E402
from videococa.index.store import INDEX_CAPTIONS  # noqa: E402
from videococa.tasks.embed import embed_to_parquet  # noqa: E402
from videococa.testing import UNREADABLE, HostileReader, write_hostile_files, write_long_gop  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster():
    """A Ray runtime for this module: 2 CPUs, no dashboard; its GCS address for drivers in other processes."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _copies(src: list[str], root: Path, n: int) -> list[str]:
    """n distinct files (copies of the easy videos under other names)."""
    root.mkdir(parents=True, exist_ok=True)
    return [str(shutil.copy2(src[i % len(src)], root / f"v{i:02d}_{Path(src[i % len(src)]).name}")) for i in range(n)]


def _shard_paths(out: Path) -> Counter:
    """How many shards hold each file."""
    return Counter(p for s in out.glob("part-*.parquet")
                   for p in set(pq.read_table(s, columns=["path"]).column(0).to_pylist()))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, easy_videos, tiny_model, cluster):
    """One run each way over the easy videos and the hostile files (segments of 1 s, captions): (ray, local)."""
    root = tmp_path_factory.mktemp("mixed")
    lib = root / "library"
    lib.mkdir()
    good = [shutil.copy2(p, lib / Path(p).name) for p in easy_videos]
    bad = write_hostile_files(lib)
    paths = sorted(map(str, good)) + sorted(bad.values())
    kw = dict(num_frames=4, segment=1.0, captions=INDEX_CAPTIONS)
    with RayBackend(RayOptions(files_per_task=2, files_per_shard=3)) as backend:
        ray_report = backend.embed(tiny_model, paths, root / "shards", **kw)
    local_report = embed_to_parquet(tiny_model, paths, root / "local.parquet", **kw)
    return ray_report, local_report, paths


def test_embed_on_ray_equals_embed_on_the_local_path(mixed):
    ray_report, local_report, _ = mixed
    out = Path(ray_report.out)
    shards = sorted(out.glob("part-*.parquet"))
    local = pq.read_table(local_report.out)
    assert len(shards) >= 2 and all(pq.read_schema(s).equals(local.schema, check_metadata=True) for s in shards)
    key = [("path", "ascending"), ("start", "ascending")]
    got, want = pq.read_table(out).sort_by(key), local.sort_by(key)
    assert got.num_rows == want.num_rows == ray_report.rows == local_report.rows > 5
    for col in want.column_names:
        if col != "embedding":
            assert got.column(col).to_pylist() == want.column(col).to_pylist(), col
    a, b = (np.asarray(t.column("embedding").to_pylist(), dtype=np.float32) for t in (got, want))
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert ray_report.videos == local_report.videos == 6  # the five easy videos and the cut-off one
    assert [n.reason for n in ray_report.notes] == [n.reason for n in local_report.notes]  # cut.mp4's truncation
    assert (out / SUCCESS).is_file() and json.loads((out / SUCCESS).read_text())["failed"] == 4
    s = ray_report.summary
    assert (s.items, s.done, s.failed) == (10, 6, 4) and all(st.files == 10 for st in s.stages.values())


def test_the_errors_table_names_every_bad_file(mixed):
    ray_report, local_report, paths = mixed
    errors = pq.read_table(Path(ray_report.out) / ERRORS)
    assert sorted(Path(p).name for p in errors.column("path").to_pylist()) == sorted(UNREADABLE)
    reasons = dict(zip(errors.column("path").to_pylist(), errors.column("reason").to_pylist()))
    assert reasons == {f.path: f.reason for f in local_report.failed}  # the same words as the local path
    assert "HTML" in reasons[next(p for p in paths if p.endswith("page.mp4"))]
    assert sorted(f.path for f in ray_report.failed) == sorted(reasons)


def test_index_from_ray_shards_searches_like_index(mixed, tiny_model, tmp_path):
    ray_report, _, paths = mixed
    with VideoIndex(tmp_path / "direct", tiny_model, num_frames=4, segment=1.0, captions=True) as direct:
        direct.update(paths)
        queries = ("a red circle", "a green triangle moving left", "a yellow star")
        want = {(q, hybrid): direct.search(q, top_k=50, hybrid=hybrid) for q in queries for hybrid in (False, True)}
    with VideoIndex(tmp_path / "merged", tiny_model, num_frames=4, segment=1.0, captions=True) as merged:
        r = merged.add_parquet(ray_report.out)
        assert len(r.added) == 6 and not r.failed
        for (q, hybrid), expected in want.items():
            hits = merged.search(q, top_k=50, hybrid=hybrid)  # every entry: no tie at a cut-off
            if hybrid:  # rank fusion ties some entries; tied ones come in insertion order, which differs here
                hits, expected = (sorted(x, key=lambda h: (h.path, h.start)) for x in (hits, expected))
            np.testing.assert_allclose([h.score for h in hits], [h.score for h in expected], atol=1e-5)
            assert [(h.path, h.start, h.end, h.caption) for h in hits] == \
                   [(h.path, h.start, h.end, h.caption) for h in expected]
        assert len(merged.add_parquet(ray_report.out).unchanged) == 6  # merging again adds nothing


def test_caption_and_index_commands_on_ray_match_local(easy_videos, cluster, capsys, tmp_path):
    argv = ["caption", *easy_videos, "--frames", "4", "--method", "greedy", "--max-len", "12", "--json"]
    assert main(argv) == 0
    local = capsys.readouterr().out
    assert main([*argv, "--backend", "ray"]) == 0  # joins this module's runtime, and leaves it running
    assert capsys.readouterr().out == local
    for backend in ("local", "ray"):
        assert main(["index", *easy_videos, "--index", str(tmp_path / backend), "--frames", "4", "--segment", "1",
                     "--backend", backend, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["added"] == 5
    for query in ("a red circle", "a purple hexagon"):
        assert main(["search", str(tmp_path / "local"), query, "--json"]) == 0
        local = capsys.readouterr().out
        assert main(["search", str(tmp_path / "ray"), query, "--json"]) == 0
        assert [json.loads(x)["path"] for x in capsys.readouterr().out.splitlines()] == \
               [json.loads(x)["path"] for x in local.splitlines()]


def test_keyframes_sampling_on_ray_equals_local(tiny_model, easy_videos, cluster, tmp_path):
    """--sampling keyframes passes through the decoding tasks: the same frame_times, metadata and embeddings."""
    gop = write_long_gop(tmp_path / "gop25.mp4")
    paths = [str(gop), easy_videos[0]]
    kw = dict(num_frames=4, segment=2.0, sampling="keyframes")
    with RayBackend(RayOptions(files_per_task=1, files_per_shard=2)) as backend:
        ray_report = backend.embed(tiny_model, paths, tmp_path / "shards", **kw)
    local = pq.read_table(embed_to_parquet(tiny_model, paths, tmp_path / "local.parquet", **kw).out)
    key = [("path", "ascending"), ("start", "ascending")]
    got, want = pq.read_table(Path(ray_report.out)).sort_by(key), local.sort_by(key)
    assert got.schema.metadata == want.schema.metadata and want.schema.metadata[b"videococa.sampling"] == b"keyframes"
    assert got.column("frame_times").to_pylist() == want.column("frame_times").to_pylist()
    times = dict(zip(zip(want.column("path").to_pylist(), want.column("start").to_pylist()),
                     want.column("frame_times").to_pylist()))
    assert [times[str(gop), 0.0], times[str(gop), 2.0]] == [[0.0, 1.0, 1.0, 2.0], [2.0, 3.0, 3.0, 3.0]]
    np.testing.assert_allclose(np.asarray(got.column("embedding").to_pylist()),
                               np.asarray(want.column("embedding").to_pylist()), atol=1e-5)


def _encode_actor_pids() -> list[int]:
    """Pids of the model actors now alive (Ray's internal GCS view: the state API needs the dashboard)."""
    import ray._private.state as state  # noqa: PLC0415 - internal API, used by this test only

    return [a["Pid"] for a in state.actors().values() if a["State"] == "ALIVE" and "MapWorker" in a["ActorClassName"]]


def test_killed_workers_are_retried_and_every_file_lands_once(tiny_model, easy_videos, cluster, tmp_path):
    """A model actor killed mid-run is restarted and its batch retried by Ray; a file that kills its decoding
    worker on every attempt costs only itself (its batch fails, its neighbour passes alone, it is recorded)."""
    videos = _copies(easy_videos, tmp_path / "lib", 10)
    crash = videos[3]
    reader = HostileReader(crash=(Path(crash).name,), delay=0.2)
    out = tmp_path / "shards"
    killed: list[int] = []

    def kill_an_actor_mid_run():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            pids = _encode_actor_pids() if any(out.glob("part-*.parquet")) else []
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.2)

    killer = threading.Thread(target=kill_an_actor_mid_run, daemon=True)
    killer.start()
    with RayBackend(RayOptions(files_per_task=2, files_per_shard=2, task_retries=1), reader=reader) as backend:
        report = backend.embed(tiny_model, videos, out, num_frames=4)
    killer.join()
    assert killed, "no model actor was alive to kill after the first shard"
    counts = _shard_paths(out)
    assert set(counts) == set(videos) - {crash} and set(counts.values()) == {1}  # every file exactly once
    assert pq.read_table(out).num_rows == 9
    errors = pq.read_table(out / ERRORS).to_pylist()
    assert [e["path"] for e in errors] == [crash] and "the last times alone" in errors[0]["reason"]
    assert report.summary.retried_alone >= 1 and report.videos == 9 and (out / SUCCESS).is_file()


def test_a_killed_driver_is_resumed_without_duplicates(tiny_model, easy_videos, cluster, tmp_path):
    videos = _copies(easy_videos, tmp_path / "lib", 10)
    out = tmp_path / "shards"
    script = textwrap.dedent("""
        import sys, ray
        from videococa import load_model
        from videococa.backends import RayOptions
        from videococa.backends.raydata import RayBackend
        from videococa.testing import HostileReader
        ray.init(address=sys.argv[1], logging_level="ERROR")
        with RayBackend(RayOptions(files_per_task=1, files_per_shard=1), reader=HostileReader(delay=0.6)) as b:
            b.embed(load_model("videococa-tiny"), sys.argv[3:], sys.argv[2], num_frames=4)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    driver = subprocess.Popen([sys.executable, "-c", script, cluster, str(out), *videos], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while len(list(out.glob("part-*.parquet"))) < 3 and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.02)
        assert driver.poll() is None, "the driver finished before it could be killed"
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.kill()
        driver.wait()
    before = {s.name: s.stat().st_mtime_ns for s in out.glob("part-*.parquet")}
    # Ray writes shards as model batches finish, sometimes all the rest at once: killed after the 3rd, the driver
    # may have written up to all 10, but never the completion marker
    assert 3 <= len(before) <= 10 and not (out / SUCCESS).exists()
    with RayBackend(RayOptions(files_per_task=2)) as backend:
        report = backend.embed(tiny_model, videos, out, num_frames=4)
    assert report.resumed >= len(before) and report.summary.done == 10 - report.resumed
    assert {s: out.joinpath(s).stat().st_mtime_ns for s in before} == before  # the shards written are kept as they are
    counts = _shard_paths(out)
    assert set(counts) == set(videos) and set(counts.values()) == {1} and pq.read_table(out).num_rows == 10
    assert (out / SUCCESS).is_file() and not report.failed
    with RayBackend() as backend:
        again = backend.embed(tiny_model, videos, out, num_frames=4)  # all done: nothing to run
    assert again.resumed == 10 and again.summary.done == 0 and _shard_paths(out) == counts


# --------------------------------------------------------------------------- clips of annotation items
@pytest.fixture(scope="module")
def small_benchmark(tmp_path_factory):
    """Six synthetic benchmark videos (videococa.synthetic.benchmark), one of them overwritten with HTML: a bad item."""
    from videococa.synthetic.benchmark import make_benchmark  # noqa: PLC0415 - PyAV; only these tests need it

    root = make_benchmark(tmp_path_factory.mktemp("bench"), num_videos=6, num_frames=8, size=64)
    bad = root / "videos" / "0002.mp4"
    bad.write_text("<!doctype html><html><body>not a video</body></html>")
    return root / "annotations.json", str(bad)


def _skipped(err: str) -> list[str]:
    return sorted(line for line in err.splitlines() if line.startswith("videococa: skipped"))


def _spy_on_ray(monkeypatch) -> list[int]:
    """Counts the Ray backend's clip runs (so a test knows the command ran on Ray, not on the local path)."""
    calls: list[int] = []
    real = RayBackend.encode_clip_keys

    def spy(self, model, keys, **kwargs):
        calls.append(len(keys))
        yield from real(self, model, keys, **kwargs)

    monkeypatch.setattr(RayBackend, "encode_clip_keys", spy)
    return calls


def test_cache_features_on_ray_equals_the_local_cache(small_benchmark, tiny_model, cluster, capsys, tmp_path,
                                                      monkeypatch):
    from videococa.train import FeatureCache  # noqa: PLC0415 - as above

    ann, bad = small_benchmark
    ray_runs = _spy_on_ray(monkeypatch)
    argv = ["cache-features", str(ann), "--dataset", "synthetic", "--frames", "4", "--batch-size", "2", "--json"]
    runs = {}
    for backend in ("local", "ray"):
        code = main([*argv, "--out", str(tmp_path / backend), "--backend", backend])
        out, err = capsys.readouterr()
        summary = json.loads(out.splitlines()[-1])
        assert summary.pop("out") == str(tmp_path / backend)
        runs[backend] = (code, summary, _skipped(err))
    assert runs["ray"] == runs["local"] and ray_runs == [6]
    code, summary, skipped = runs["local"]
    assert code == 1 and summary["cached"] == 5 and summary["failed"] == 1
    assert len(skipped) == 1 and bad in skipped[0] and "HTML" in skipped[0]  # the bad item, in the same words
    local, remote = FeatureCache(tmp_path / "local", tiny_model, 4), FeatureCache(tmp_path / "ray", tiny_model, 4)
    assert remote.manifest == local.manifest and sorted(remote._rows) == sorted(local._rows) and len(local) == 5
    for key in local._rows:
        a, b = local.get(key), remote.get(key)
        assert a.dtype == b.dtype == torch.float16 and a.shape == b.shape == (4, *a.shape[1:])
        torch.testing.assert_close(b.float(), a.float(), atol=2e-3, rtol=2e-3)  # fp16: one rounding step


def test_eval_on_ray_gives_the_local_metrics(small_benchmark, cluster, capsys, tmp_path, monkeypatch):
    ann, _ = small_benchmark
    ray_runs = _spy_on_ray(monkeypatch)
    for task, extra in (("classify", []), ("caption", ["--method", "greedy"])):
        results = {}
        for backend in ("local", "ray"):
            monkeypatch.setenv("VIDEOCOCA_CACHE", str(tmp_path / backend))  # nothing reused from the other run
            code = main(["eval", task, "--dataset", "synthetic", "--annotations", str(ann), "--frames", "4",
                         "--json", "--backend", backend, *extra])
            out, err = capsys.readouterr()
            (r,) = json.loads(out)["results"]
            r["protocol"].pop("seconds")
            results[backend] = (code, r, "1 listed videos were missing or unreadable" in err)
        assert results["ray"] == results["local"] and ray_runs.pop() >= 5, task
        code, r, said = results["local"]
        assert code == 0 and said and r["protocol"]["videos_unreadable"] == 1 and r["protocol"]["items"] >= 5


def test_clip_keys_on_ray_name_bad_items_as_given_and_cover_every_clip(easy_videos, tiny_model, cluster, tmp_path,
                                                                       monkeypatch):
    from videococa.tasks.clipkeys import encode_clip_keys  # noqa: PLC0415 - as above

    (tmp_path / "empty.mp4").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    keys = [(easy_videos[0], 0.5, 1.5), ("empty.mp4", None, None), (easy_videos[1], None, None),
            ("missing.mp4", 0.0, 1.0), (easy_videos[0], None, 2.0)]
    kw = dict(num_frames=4, return_tokens=True, batch_size=2)
    local = list(encode_clip_keys(tiny_model, keys, **kw))
    with RayBackend(RayOptions(files_per_task=2)) as backend:
        remote = list(backend.encode_clip_keys(tiny_model, keys, **kw))
    for name in ("ix", "failed"):
        assert sorted(x for b in remote for x in getattr(b, name)) == sorted(x for b in local for x in getattr(b, name))
    failed = dict(x for b in local for x in b.failed)
    assert sorted(failed) == [1, 3] and "'empty.mp4'" in failed[1] and str(tmp_path) not in failed[1]
    for name in ("embeddings", "video_tokens"):
        got, want = ({i: t for b in run for i, t in zip(b.ix, getattr(b, name))} for run in (remote, local))
        assert sorted(got) == [0, 2, 4]
        for i in got:
            torch.testing.assert_close(got[i].float(), want[i].float(), atol=1e-5, rtol=1e-4)
