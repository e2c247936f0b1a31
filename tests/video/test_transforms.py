"""Preprocessing: our tensor pipeline against open_clip's PIL eval transform."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from videococa.video import CLIP_MEAN, CLIP_STD, decode_frames_at, preprocess_frames
from videococa.testing import pattern, sample_video

STD = torch.tensor(CLIP_STD).view(3, 1, 1)


def _frames() -> list[np.ndarray]:
    out = []
    for name in ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"):
        frames, _, _ = decode_frames_at(sample_video(name), [0.5, 2.0])
        out += frames
    rng = np.random.default_rng(0)
    out.append(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8))  # noise: the hardest case for resampling
    out.append(pattern(5, 97, 61))  # portrait, odd sizes, upsampled
    return out


def test_constants_are_open_clips():
    assert CLIP_MEAN == open_clip.OPENAI_DATASET_MEAN and CLIP_STD == open_clip.OPENAI_DATASET_STD


@pytest.mark.parametrize("size", [224, 160])
def test_matches_open_clip_eval_transform(size):
    reference = open_clip.image_transform(size, is_train=False)
    for rgb in _frames():
        ref = reference(Image.fromarray(rgb))  # (3, size, size)
        ours = preprocess_frames(rgb, size=size)[0]
        assert ours.shape == ref.shape == (3, size, size)
        pixel_diff = ((ours - ref) * STD).abs().mean().item()  # back in [0, 1] pixel units
        assert pixel_diff <= 1 / 255, f"{rgb.shape}: mean |diff| = {pixel_diff * 255:.3f}/255"


def test_bad_frames_rejected():
    with pytest.raises(ValueError, match=r"expected an \(H, W, 3\) uint8 RGB frame"):
        preprocess_frames(np.zeros((10, 10, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="no frames"):
        preprocess_frames([])
