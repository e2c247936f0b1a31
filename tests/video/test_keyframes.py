"""Decoding speed-ups that must not change what is returned: non-reference frames skipped while seeking forward
(the exact path stays bit for bit the full decode), and the opt-in keyframes sampling, which returns keyframes and
says which times they are."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from videococa import VideoLoader, read_clips, read_video
from videococa.video import decode as D
from videococa.video import decode_all, decode_frames_at, iter_clips, uniform_times
from videococa.video.transforms import Preprocess
from videococa.testing import keyframe_times, reference_frame_at, sample_video, write_long_gop, write_video

SAMPLES = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")


@pytest.fixture(scope="module")
def long_gop(tmp_path_factory):
    """4 s at 25 fps with B-frames and a keyframe every second (x264's default preset: b-pyramid, non-ref B)."""
    return write_long_gop(tmp_path_factory.mktemp("gop") / "gop25.mp4")


@pytest.mark.parametrize("name", SAMPLES + ("long_gop",))
def test_exact_clip_is_the_full_decode_preprocessed(name, long_gop):
    """read_video's default output equals the full decode's frames put through the model's preprocessing."""
    path = long_gop if name == "long_gop" else sample_video(name)
    ref = list(decode_all(path))
    clip = read_video(path, 8)
    p = Preprocess()
    want = [reference_frame_at(ref, t) for t in clip.requested_times]
    assert clip.timestamps == pytest.approx([t for t, _ in want], abs=1e-9) and clip.sampling == "uniform"
    assert torch.equal(clip.frames, p.normalize(torch.stack([p.crop(f) for _, f in want])))


def test_nonreference_frames_are_skipped_and_output_unchanged(long_gop, monkeypatch):
    modes = []
    real = D._AVSource._set_skip

    def spy(self, packet):
        real(self, packet)
        modes.append(self._skip_mode)

    monkeypatch.setattr(D._AVSource, "_set_skip", spy)
    ref = list(decode_all(long_gop))
    times = uniform_times(8, 0, 4.0) + [0.0, 3.99, 7.0]
    frames, stamps, _ = decode_frames_at(long_gop, times)
    assert "NONREF" in modes  # the decoder was told to drop frames it does not need
    for t, frame, stamp in zip(times, frames, stamps):
        ref_t, ref_frame = reference_frame_at(ref, t)
        assert stamp == pytest.approx(ref_t, abs=1e-9) and np.array_equal(frame, ref_frame)


def test_a_skipped_frame_that_was_needed_is_decoded_again(long_gop, monkeypatch):
    """Even when the skip rule over-reaches (here: every non-reference frame up to 10 s past the target may be
    dropped, the shown one too), the check after each target notices and decodes that target again in full."""
    real = D._AVSource._set_skip
    redone = []

    def greedy(self, packet):
        if self._skip_below is not None:
            self._skip_below += 10 * int(1 / self.stream.time_base)
        real(self, packet)

    real_seek_to = D._AVSource._seek_to

    def seek_to(self, target):
        redone.append(self._skip_below is None)
        real_seek_to(self, target)

    monkeypatch.setattr(D._AVSource, "_set_skip", greedy)
    monkeypatch.setattr(D._AVSource, "_seek_to", seek_to)
    ref = list(decode_all(long_gop))
    times = [0.5, 0.9, 1.3, 2.7, 3.5]
    frames, stamps, _ = decode_frames_at(long_gop, times)
    assert any(redone)
    for t, frame, stamp in zip(times, frames, stamps):
        ref_t, ref_frame = reference_frame_at(ref, t)
        assert stamp == pytest.approx(ref_t, abs=1e-9) and np.array_equal(frame, ref_frame)


def test_only_h264_skips(tmp_path):
    path = write_video(tmp_path / "v.webm", codec="libvpx-vp9", num_frames=10, gop=5)
    src = D.open_video(path)
    try:
        assert not src._skip_nonref
    finally:
        src.close()


@pytest.mark.parametrize("name", SAMPLES + ("long_gop",))
def test_keyframes_mode_returns_the_nearest_keyframes_with_their_times(name, long_gop):
    path = long_gop if name == "long_gop" else sample_video(name)
    ref = list(decode_all(path))
    keys = keyframe_times(path)
    clip = read_video(path, 8, sampling="keyframes")
    assert clip.sampling == "keyframes" and clip.requested_times == pytest.approx(uniform_times(8, 0, clip.info.duration))
    p = Preprocess()
    for want, got, frame in zip(clip.requested_times, clip.timestamps, clip.frames):
        nearest = min(keys, key=lambda k: (abs(k - want), k))
        assert got == pytest.approx(nearest, abs=1e-9), (want, got, keys)
        t, rgb = reference_frame_at(ref, got)
        assert t == pytest.approx(got, abs=1e-9)
        assert torch.equal(frame, p.normalize(p.crop(rgb)))
    if len(keys) > 1:
        assert len(set(clip.timestamps)) > 1


def test_keyframes_in_windows_and_loader(long_gop):
    keys = keyframe_times(long_gop)
    clips = read_clips(long_gop, 2, segment=2.0, sampling="keyframes")
    assert [(c.start, c.end) for c in clips] == [(0.0, 2.0), (2.0, 4.0)]
    assert all(t in keys for c in clips for t in c.timestamps) and {c.sampling for c in clips} == {"keyframes"}
    batch = next(iter(VideoLoader([long_gop], 4, workers=0, sampling="keyframes", segment=2.0)))
    assert [c.timestamps for c in batch.clips] == [c.timestamps for c in read_clips(long_gop, 4, segment=2.0,
                                                                                     sampling="keyframes")]
    assert all(t in keys for c in batch.clips for t in c.timestamps)


def test_exact_reads_after_keyframe_reads_are_exact(long_gop):
    """One open file read both ways (keyframes, then exact frames) gives each mode's own answer."""
    ref = list(decode_all(long_gop))
    src = D.open_video(long_gop)
    try:
        _, stamps = src.keyframes_at([1.9, 3.1], lambda a: a)
        assert stamps == pytest.approx([2.0, 3.0])
        frames, stamps = src.frames_at([1.9, 3.1], lambda a: a)
    finally:
        src.close()
    for t, frame, stamp in zip([1.9, 3.1], frames, stamps):
        ref_t, ref_frame = reference_frame_at(ref, t)
        assert stamp == pytest.approx(ref_t) and np.array_equal(frame, ref_frame)


def test_bad_sampling_values_list_the_allowed_ones(long_gop):
    with pytest.raises(ValueError, match="unknown sampling 'key'; choose one of: uniform, random, keyframes"):
        read_video(long_gop, 4, sampling="key")
    with pytest.raises(ValueError, match="unknown sampling 'random'; choose one of: uniform, keyframes"):
        next(iter_clips(long_gop, 4, segment=1.0, sampling="random"))
    with pytest.raises(ValueError, match="unknown sampling 'nearest'; choose one of: uniform, random, keyframes"):
        VideoLoader([long_gop], sampling="nearest")


def test_still_image_in_keyframes_mode(tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "a.png")
    clip = read_video(tmp_path / "a.png", 3, sampling="keyframes")
    assert clip.timestamps == [0.0, 0.0, 0.0] and clip.frames.shape == (3, 3, 224, 224)


def test_reading_threads_use_one_thread_each_and_change_nothing_else(long_gop):
    """VideoLoader's threads resize on one torch thread and decode on one FFmpeg thread: the frames are the ones
    read in this thread, and threads started afterwards (a model's) keep torch's thread count."""
    import threading

    paths = [long_gop, sample_video("bikes.mp4")]
    before = torch.get_num_threads()
    loaded = [c for b in VideoLoader(paths, 8, batch_size=1, workers=2) for c in b.clips]
    for clip, path in zip(loaded, paths):
        direct = read_video(path, 8)
        assert torch.equal(clip.frames, direct.frames) and clip.timestamps == direct.timestamps
    seen = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert seen == [before] and torch.get_num_threads() == before
