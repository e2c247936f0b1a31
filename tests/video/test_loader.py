"""VideoLoader: stable order, error records instead of crashes, same results with and without workers."""

from __future__ import annotations

import pytest
import torch

from videococa import FileIssue, VideoLoader, read_video
from videococa.testing import sample_video


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    bad = tmp_path_factory.mktemp("bad") / "broken.mp4"
    bad.write_text("<html>not found</html>")
    return [
        sample_video("bikes.mp4"),
        str(bad),
        sample_video("carphone_pristine.mp4"),
        "/nonexistent/video.mp4",
        sample_video("bigbuckbunny.mp4"),
    ]


@pytest.mark.parametrize("workers", [0, 2])
def test_order_errors_and_values(paths, workers):
    batches = list(VideoLoader(paths, num_frames=4, batch_size=2, workers=workers))
    assert [len(b.items) for b in batches] == [2, 2, 1]
    items = [x for b in batches for x in b.items]
    assert [x.path for x in items] == paths  # stable order, every result names its path
    assert isinstance(items[1], FileIssue) and "broken.mp4': not a video" in items[1].reason
    assert isinstance(items[3], FileIssue) and "file not found" in items[3].reason
    for x, p in zip(items, paths):
        if not isinstance(x, FileIssue):
            assert torch.equal(x.frames, read_video(p, 4).frames)
    assert batches[0].frames.shape == (1, 4, 3, 224, 224) and batches[0].paths == [paths[0]]
    assert len(batches[0].errors) == 1


def test_loader_arguments_checked():
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        VideoLoader(["a.mp4"], batch_size=0)
    with pytest.raises(ValueError, match="unknown sampling 'x'"):
        VideoLoader(["a.mp4"], sampling="x")


def test_works_in_a_process_that_already_runs_threads(paths):
    """A forking loader deadlocked here (CPython's after-fork handler) once other threads existed."""
    import threading

    stop = threading.Event()
    busy = [threading.Thread(target=stop.wait, daemon=True) for _ in range(3)]
    for t in busy:
        t.start()
    try:
        items = [x for b in VideoLoader(paths, num_frames=2, batch_size=2, workers=2) for x in b.items]
    finally:
        stop.set()
    assert [x.path for x in items] == paths


def test_stopping_early_and_len(paths):
    loader = VideoLoader(paths, num_frames=2, batch_size=2, workers=2, prefetch=1)
    assert len(loader) == 3
    first = next(iter(loader))
    assert [x.path for x in first.items] == paths[:2]
