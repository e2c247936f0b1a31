"""The model owns its preprocessing: `model.preprocess`, `model.read_video`, and uint8 frames of any size.

Reading through the model's Preprocess must give exactly what the older explicit size/mean/std keywords gave
(same frames, same embeddings, bit for bit), and raw uint8 frames must give the same embedding as the frames
`read_video` makes from them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import videococa
from videococa.testing import sample_video
from videococa.tasks.batch import encode_videos
from videococa.video import decode_frames_at, iter_clips


def _old_style(model) -> dict:
    info = model.info
    return dict(size=info.image_size, mean=info.image_mean, std=info.image_std)


def test_preprocess_is_the_models_size_mean_and_std(tiny_model, model):
    for m in (tiny_model, model):
        p = m.preprocess
        assert (p.size, p.mean, p.std) == (m.info.image_size, m.info.image_mean, m.info.image_std)
    assert tiny_model.preprocess.size == 64 and model.preprocess.size == 224
    with pytest.raises(AttributeError):
        tiny_model.preprocess.size = 32  # frozen: a model's preprocessing cannot be changed by accident


def test_new_contract_reads_exactly_the_old_explicit_frames(tiny_model, easy_videos):
    path, old = easy_videos[2], _old_style(tiny_model)
    want = videococa.read_video(path, 4, **old)
    for clip in (tiny_model.read_video(path, 4), videococa.read_video(path, 4, preprocess=tiny_model.preprocess)):
        assert torch.equal(clip.frames, want.frames) and clip.timestamps == want.timestamps
    assert clip.frames.shape == (4, 3, 64, 64)
    assert torch.equal(tiny_model.encode_video(clip.frames[None]), tiny_model.encode_video(want.frames[None]))

    want_clips = videococa.read_clips(path, 2, num_clips=3, **old)
    got_clips = videococa.read_clips(path, 2, num_clips=3, preprocess=tiny_model.preprocess)
    streamed = [c for chunk in iter_clips(path, 2, num_clips=3, preprocess=tiny_model.preprocess) for c in chunk]
    for got in (got_clips, streamed):
        assert [c.start for c in got] == [c.start for c in want_clips]
        assert all(torch.equal(a.frames, b.frames) for a, b in zip(got, want_clips))

    (batch,) = videococa.VideoLoader(easy_videos[:2], 4, batch_size=2, workers=0, preprocess=tiny_model.preprocess)
    (old_batch,) = videococa.VideoLoader(easy_videos[:2], 4, batch_size=2, workers=0, **old)
    assert torch.equal(batch.frames, old_batch.frames)


def test_encode_videos_embeddings_are_bit_identical_to_old_style_reading(tiny_model, easy_videos):
    got = torch.stack([e.embedding for e in encode_videos(tiny_model, easy_videos[:2], num_frames=4, workers=0)])
    old = _old_style(tiny_model)
    want = tiny_model.encode_video(torch.stack([videococa.read_video(p, 4, **old).frames for p in easy_videos[:2]]))
    assert torch.equal(got, want)


def test_uint8_frames_of_any_size_are_preprocessed_by_the_model(tiny_model):
    path = sample_video("carphone_pristine.mp4")  # 176x144: neither square nor the model's 64 px
    clip = tiny_model.read_video(path, 4)
    rgb, _, _ = decode_frames_at(path, clip.timestamps)
    raw = torch.from_numpy(np.stack(rgb))[None]  # (1, T, H, W, 3) uint8
    assert raw.shape == (1, 4, 144, 176, 3)
    want = tiny_model.encode_video(clip.frames[None])
    assert torch.equal(tiny_model.encode_video(raw), want)
    assert torch.equal(tiny_model.encode_video(raw.permute(0, 1, 4, 2, 3)), want)  # channels first too
    assert torch.equal(tiny_model.preprocess(raw[0].numpy()), clip.frames)  # numpy in, (T, 3, S, S) out
    _, tokens = tiny_model.encode_video(clip.frames[None], return_tokens=True)
    assert tiny_model.generate(raw, method="greedy", max_len=6) == tiny_model.generate(video_tokens=tokens,
                                                                                    method="greedy", max_len=6)
    assert tiny_model.answer(raw, "what colour is it?") == tiny_model.answer(video_tokens=tokens,
                                                                               questions="what colour is it?")


def test_preprocess_keeps_leading_dimensions_and_checks_its_input():
    p = videococa.Preprocess(size=8)
    x = torch.randint(0, 256, (2, 3, 20, 30, 3), dtype=torch.uint8)
    out = p(x)
    assert out.shape == (2, 3, 3, 8, 8) and out.dtype == torch.float32
    assert torch.equal(out[1, 2], p(x[1, 2]))
    assert torch.equal(out.flatten(0, 1), videococa.preprocess_frames(list(x.flatten(0, 1)), size=8))
    with pytest.raises(ValueError, match=r"expected uint8 RGB frames .* got \(3, 20, 30, 3\) torch.float32"):
        p(x[0].float())
    with pytest.raises(ValueError, match=r"got \(4, 5, 6\)"):
        p(torch.zeros(4, 5, 6, dtype=torch.uint8))
    with pytest.raises(ValueError, match="size must be a positive integer number of pixels, got 0"):
        videococa.Preprocess(size=0)
    with pytest.raises(ValueError, match=r"mean must have 3 values \(R, G, B\), got 2"):
        videococa.Preprocess(mean=(0.5, 0.5))
    assert videococa.Preprocess(16, [0.5] * 3, [0.25] * 3) == videococa.Preprocess(16, (0.5,) * 3, (0.25,) * 3)


def test_preprocess_and_explicit_size_together_is_an_error(tiny_model, easy_videos):
    with pytest.raises(ValueError, match="give either preprocess or size/std, not both"):
        videococa.read_video(easy_videos[0], 2, preprocess=tiny_model.preprocess, size=64, std=(1, 1, 1))
    with pytest.raises(ValueError, match="give either preprocess or size, not both"):
        videococa.VideoLoader(easy_videos, 2, preprocess=tiny_model.preprocess, size=64)
    with pytest.raises(TypeError, match="preprocess must be a videococa Preprocess"):
        videococa.read_clips(easy_videos[0], 2, num_clips=1, preprocess=lambda x: x)
