"""The README's Python API examples run as written, one block after another, with any model.

Only what cannot exist offline is substituted: the pretrained model line (-> the model under test) and the
Kinetics-400 label set (-> a three-class file, so a random ViT-B-32 text tower stays quick). To keep the test
short on two cores, clips have 2 frames instead of 8, and the random ViT-B-32 (which never predicts its end
token, so every caption runs to max_len) gets a default caption length of 5 tokens (the default min_len); lengths the examples
state themselves are kept. The videos the examples name ("video.mp4", "query.mp4", the "videos" folder) are
real files written into a temporary working directory, where the index and the Parquet file are written too.
"""

from __future__ import annotations

import functools
import re
import shutil
from pathlib import Path

import pytest
import torch

import videococa

README = Path(__file__).resolve().parents[1] / "README.md"
PRETRAINED_LINE = 'videococa.load_model("coca_ViT-B-32", "laion2b_s13b_b90k")'


def python_api_blocks() -> list[str]:
    """The ```python blocks of the README's "Python API" section (up to the next level-2 heading)."""
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## Python API\n(.*?)^## ", text, flags=re.S | re.M)
    assert section, "README has no '## Python API' section"
    return re.findall(r"^```python\n(.*?)^```", section.group(1), flags=re.S | re.M)


@pytest.fixture(params=["videococa-tiny", "coca_ViT-B-32"])
def model_under_test(request):
    if request.param == "videococa-tiny":
        return request.getfixturevalue("tiny_model")
    with pytest.warns(UserWarning, match="RANDOM weights"):  # only the pretrained tag cannot be had offline
        model = videococa.load_model("coca_ViT-B-32")
    model.generate = functools.partial(model.generate, max_len=5)  # a call's own max_len still wins
    return model


def test_python_api_examples_run_as_written(model_under_test, easy_videos, tmp_path, monkeypatch):
    model = model_under_test
    blocks = python_api_blocks()
    assert len(blocks) >= 3
    code = "\n".join(blocks)
    assert code.count(PRETRAINED_LINE) == 1 and code.count('"kinetics400"') == 1
    assert code.count("num_frames=8") == 1
    labels = tmp_path / "labels.txt"
    labels.write_text("red circle\nblue square\ngreen triangle\n")
    code = code.replace(PRETRAINED_LINE, "__model_under_test__").replace('"kinetics400"', repr(str(labels)))
    code = code.replace("num_frames=8", "num_frames=2")

    monkeypatch.chdir(tmp_path)
    shutil.copy(easy_videos[0], "video.mp4")
    shutil.copy(easy_videos[1], "query.mp4")
    Path("videos").mkdir()
    for p in easy_videos[2:4]:
        shutil.copy(p, "videos")

    ns: dict = {"__model_under_test__": model, "__name__": "readme"}
    exec(compile(code, str(README), "exec"), ns)  # noqa: S102 - our own README

    size, dim = model.info.image_size, model.info.embed_dim
    assert ns["frames"].shape == (1, 2, 3, size, size)
    assert ns["emb"].shape == (1, dim) and torch.allclose(ns["emb"].norm(dim=-1), torch.ones(1))
    assert ns["video_tokens"].shape[0] == 1 and ns["text"].shape == (2, dim)
    assert [len(p) for p in ns["clf"](ns["frames"], top_k=2)] == [2]
    assert Path("library.vcindex").is_dir() and Path("embeddings.parquet").is_file()
    with videococa.VideoIndex("library.vcindex", model) as index:
        hits = index.search_video("query.mp4", top_k=5)
    assert sorted(Path(h.path).name for h in hits) == sorted(Path(p).name for p in easy_videos[2:4])
