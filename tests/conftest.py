"""Shared fixtures: a randomly initialised open_clip CoCa and the same weights loaded through videococa."""

from __future__ import annotations

import warnings

import open_clip
import pytest
import torch
from safetensors.torch import save_file

B32 = "coca_ViT-B-32"


def make_reference(name: str = B32, seed: int = 0) -> torch.nn.Module:
    """open_clip's own CoCa with random weights (text_projection initialised: open_clip leaves it empty)."""
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    torch.nn.init.normal_(model.text_decoder.text_projection, std=0.02)
    return model.eval()


@pytest.fixture(scope="session")
def reference() -> torch.nn.Module:
    return make_reference()


@pytest.fixture(scope="session")
def weights_file(reference, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("weights") / "coca_b32.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    return str(path)


@pytest.fixture(scope="session")
def model(weights_file):
    from videococa import load_model

    return load_model(B32, pretrained=weights_file)


@pytest.fixture(scope="session")
def frames() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 4, 3, 224, 224, generator=g)  # (B, T, 3, H, W)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


warnings.filterwarnings("ignore", message=".*RANDOM weights.*")

# In-process CLI runs raise SIGINT in the test process itself: give its watchdog ample time, so a stalled CI
# machine can never end pytest. The watchdog's own test runs in a subprocess with the real 1 s grace.
import os as _os

_os.environ["VIDEOCOCA_SIGINT_GRACE"] = "60"
# precision="auto" picks bf16 on CPUs with AMX or AVX512-BF16 and fp32 elsewhere; the suite pins fp32 so its numbers
# do not depend on the machine (tests/models/test_precision.py covers what auto picks).
_os.environ["VIDEOCOCA_PRECISION"] = "fp32"


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Caches (text embeddings, demo videos) go to a per-run directory, never the user's ~/.cache."""
    import os

    old = os.environ.get("VIDEOCOCA_CACHE")
    os.environ["VIDEOCOCA_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("VIDEOCOCA_CACHE", None)
    else:
        os.environ["VIDEOCOCA_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_model():
    from videococa import load_model

    return load_model("videococa-tiny")


@pytest.fixture(scope="session")
def easy_videos(tmp_path_factory) -> list[str]:
    """Five short synthetic mp4 files, named colour_shape.mp4 (videococa.testing.EASY_VIDEOS)."""
    from videococa.testing import write_easy_videos

    return write_easy_videos(tmp_path_factory.mktemp("easy"))
