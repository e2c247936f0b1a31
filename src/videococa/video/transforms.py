"""Tensor preprocessing equal in effect to open_clip's eval transform for CoCa.

open_clip (PIL): Resize(shortest side -> size, bicubic) -> CenterCrop(size) -> ToTensor -> Normalize.
Here the same steps run on uint8 tensors with torchvision's antialiased bicubic kernel,
which is built to match PIL's; tests hold the difference to <= 1/255 on average.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF
from ..errors import OptionError

# CLIP / CoCa normalisation (open_clip.OPENAI_DATASET_MEAN / _STD)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resize_crop(rgb: np.ndarray | torch.Tensor, size: int = 224) -> torch.Tensor:
    """One frame (H, W, 3) uint8 -> (3, size, size) uint8: shortest side to `size` (bicubic), centre crop."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)) if isinstance(rgb, np.ndarray) else rgb
    if x.ndim != 3 or x.shape[-1] != 3 or x.dtype != torch.uint8:
        raise OptionError(f"expected an (H, W, 3) uint8 RGB frame, got {tuple(x.shape)} {x.dtype}")
    return _resize_crop_chw(x.permute(2, 0, 1), size)  # (3, size, size)


def _resize_crop_chw(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> (..., 3, size, size): shortest side to `size` (bicubic, antialiased), centre crop."""
    x = TF.resize(x, [size], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return TF.center_crop(x, [size, size]).contiguous()


def normalize(frames: torch.Tensor, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> float32 normalised for the model."""
    m = torch.tensor(mean, dtype=torch.float32, device=frames.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=frames.device).view(3, 1, 1)
    return (frames.to(torch.float32) / 255.0 - m) / s


def _triple(value: Sequence[float], what: str) -> tuple[float, float, float]:
    values = tuple(float(v) for v in value)
    if len(values) != 3:
        raise OptionError(f"{what} must have 3 values (R, G, B), got {len(values)}: {value!r}")
    return values  # type: ignore[return-value]


@dataclass(frozen=True)
class Preprocess:
    """How RGB frames become one model's input (open_clip's eval transform): the shortest side resized to `size`
    (bicubic), a centre crop of size x size, then per-channel normalisation. A model carries its own as
    `model.preprocess`; pass it to `read_video(..., preprocess=...)`, `read_clips`, `iter_clips` or `VideoLoader`."""

    size: int = 224
    """Output side in pixels."""
    mean: tuple[float, float, float] = CLIP_MEAN
    """Per-channel (R, G, B) mean subtracted from pixels in [0, 1]."""
    std: tuple[float, float, float] = CLIP_STD
    """Per-channel (R, G, B) std the pixels are divided by after the mean is subtracted."""

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 1:
            raise OptionError(f"size must be a positive integer number of pixels, got {self.size!r}")
        object.__setattr__(self, "mean", _triple(self.mean, "mean"))
        object.__setattr__(self, "std", _triple(self.std, "std"))
        if min(self.std) <= 0:
            raise OptionError(f"std values must be positive, got {self.std!r}")

    def crop(self, rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
        """One frame (H, W, 3) uint8 -> (3, size, size) uint8, resized and centre-cropped."""
        return resize_crop(rgb, self.size)

    def normalize(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 3, size, size) -> float32 normalised with this mean and std."""
        return normalize(frames, self.mean, self.std)

    def crop_only(self) -> "Preprocess":
        """This preprocessing with the normalisation left for later: readers given it return uint8 frames
        (..., 3, size, size), a quarter of the bytes, for sending to another process, where
        `self.normalize(frames)` then gives exactly what reading with `self` gives."""
        return _CropOnly(self.size, self.mean, self.std)

    def __call__(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 RGB frames of any size, channels last (..., H, W, 3) or first (..., 3, H, W), -> float32
        (..., 3, size, size) model input. A trailing dimension of 3 is read as channels last."""
        x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"frames must be a uint8 tensor or array, got {type(frames).__name__}")
        if x.dtype != torch.uint8 or x.ndim < 3 or 3 not in (x.shape[-1], x.shape[-3]):
            raise OptionError(f"expected uint8 RGB frames (..., H, W, 3) or (..., 3, H, W), got {tuple(x.shape)} "
                             f"{x.dtype}")
        if x.shape[-1] == 3:
            x = x.movedim(-1, -3)  # (..., 3, H, W)
        if 0 in x.shape:
            raise OptionError(f"no pixels to preprocess: frames have shape {tuple(x.shape)}")
        lead = x.shape[:-3]
        out = self.normalize(_resize_crop_chw(x.reshape(-1, *x.shape[-3:]), self.size))  # (N, 3, size, size)
        return out.reshape(*lead, *out.shape[-3:])  # (..., 3, size, size)


@dataclass(frozen=True)
class _CropOnly(Preprocess):
    """`Preprocess.crop_only()`: resized and cropped, still uint8."""

    def normalize(self, frames: torch.Tensor) -> torch.Tensor:
        return frames  # (..., 3, size, size) uint8, normalised by the receiver


def resolve_preprocess(
    preprocess: Preprocess | None,
    size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Preprocess:
    """The one Preprocess a reader uses: `preprocess` as given, or one made from the older size/mean/std
    keywords (defaults 224 px and CLIP's normalisation). Giving both is an error."""
    if preprocess is not None:
        if not isinstance(preprocess, Preprocess):
            raise TypeError(f"preprocess must be a videococa Preprocess (e.g. model.preprocess), "
                            f"got {type(preprocess).__name__}")
        given = [k for k, v in (("size", size), ("mean", mean), ("std", std)) if v is not None]
        if given:
            raise OptionError(f"give either preprocess or {'/'.join(given)}, not both "
                             f"(preprocess already holds size, mean and std)")
        return preprocess
    return Preprocess(224 if size is None else size, CLIP_MEAN if mean is None else tuple(mean),
                      CLIP_STD if std is None else tuple(std))


def preprocess_frames(
    frames: Sequence[np.ndarray] | np.ndarray | torch.Tensor,
    size: int = 224,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> torch.Tensor:
    """RGB uint8 frames (T, H, W, 3), each of any size, -> model input (T, 3, size, size) float32.

    For frames of one size, `Preprocess(size, mean, std)(frames)` (or `model.preprocess(frames)`) is the same.
    """
    if isinstance(frames, (np.ndarray, torch.Tensor)) and frames.ndim == 3:
        frames = frames[None]
    if len(frames) == 0:
        raise OptionError("no frames to preprocess")
    p = Preprocess(size, tuple(mean), tuple(std))
    return p.normalize(torch.stack([p.crop(f) for f in frames]))
