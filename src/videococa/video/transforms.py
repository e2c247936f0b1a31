"""Tensor preprocessing equal in effect to open_clip's eval transform for CoCa.

open_clip (PIL): Resize(shortest side -> size, bicubic) -> CenterCrop(size) -> ToTensor -> Normalize.
Here the same steps run on uint8 tensors with torchvision's antialiased bicubic kernel,
which is built to match PIL's; tests hold the difference to <= 1/255 on average.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

# CLIP / CoCa normalisation (open_clip.OPENAI_DATASET_MEAN / _STD)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resize_crop(rgb: np.ndarray | torch.Tensor, size: int = 224) -> torch.Tensor:
    """One frame (H, W, 3) uint8 -> (3, size, size) uint8: shortest side to `size` (bicubic), centre crop."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)) if isinstance(rgb, np.ndarray) else rgb
    if x.ndim != 3 or x.shape[-1] != 3 or x.dtype != torch.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {tuple(x.shape)} {x.dtype}")
    x = x.permute(2, 0, 1)  # (3, H, W)
    x = TF.resize(x, [size], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return TF.center_crop(x, [size, size]).contiguous()  # (3, size, size)


def normalize(frames: torch.Tensor, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> float32 normalised for the model."""
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (frames.to(torch.float32) / 255.0 - m) / s


def preprocess_frames(
    frames: Sequence[np.ndarray] | np.ndarray | torch.Tensor,
    size: int = 224,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> torch.Tensor:
    """RGB uint8 frames (T, H, W, 3) -> model input (T, 3, size, size) float32."""
    if isinstance(frames, (np.ndarray, torch.Tensor)) and frames.ndim == 3:
        frames = frames[None]
    if len(frames) == 0:
        raise ValueError("no frames to preprocess")
    return normalize(torch.stack([resize_crop(f, size) for f in frames]), mean, std)
