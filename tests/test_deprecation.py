"""Renamed keywords and attributes keep their old spelling for a while: a DeprecationWarning, and a TypeError when
both spellings are given (videococa.deprecation, the one place that does this)."""

from __future__ import annotations

import pytest
import torch

from videococa import EncodedClip, VideoIndex, embed_to_parquet, encode_videos
from videococa.demo import run_demo
from videococa.deprecation import renamed_attribute, renamed_keywords
from videococa.eval.moments import rank_moments
from videococa.eval.runner import encode_items, evaluate, evaluate_dataset
from videococa.synthetic.benchmark import make_benchmark
from videococa.tasks import encode_files
from videococa.testing import write_video
from videococa.train import FeatureCache, cache_features


@renamed_keywords(old="new")
def _f(*, new: int = 0) -> int:
    return new


class _Thing:
    new = 3
    old = renamed_attribute("old", "new")


def test_an_old_keyword_is_passed_on_under_its_new_name_with_a_warning():
    assert _f(new=1) == 1
    with pytest.warns(DeprecationWarning, match=r"_f\(old=...\) is deprecated; use new= instead") as record:
        assert _f(old=2) == 2
    assert record[0].filename == __file__  # the warning points at the caller
    with pytest.raises(TypeError, match="got both old= and new="):
        _f(old=1, new=2)


def test_an_old_attribute_reads_the_new_one_with_a_warning():
    with pytest.warns(DeprecationWarning, match=r"_Thing.old is deprecated; use .new instead"):
        assert _Thing().old == 3
    with pytest.raises(AttributeError):
        _Thing().old = 4  # read-only


# every public callable whose frame count was called `frames` (positional arguments: never reached)
FRAMES_RENAMED = [
    (VideoIndex, ("idx",)), (FeatureCache, ("cache",)), (cache_features, (None, [], "out")),
    (embed_to_parquet, (None, [], "out.parquet")), (encode_videos, (None, [])), (encode_files, (None, [])),
    (evaluate_dataset, (None, None)), (evaluate, (None, "classify", [])), (encode_items, (None, [])),
    (rank_moments, (None, [])), (run_demo, (None,)), (make_benchmark, ("root",)), (write_video, ("v.mp4",)),
]


@pytest.mark.parametrize("func, args", FRAMES_RENAMED, ids=[f.__qualname__ for f, _ in FRAMES_RENAMED])
def test_frames_is_the_old_name_of_num_frames(func, args):
    with pytest.raises(TypeError, match="got both frames= and num_frames="):
        func(*args, frames=4, num_frames=4)


def test_an_index_opened_with_frames_records_num_frames(tiny_model, tmp_path):
    with pytest.warns(DeprecationWarning, match=r"VideoIndex\(frames=...\) is deprecated; use num_frames="):
        index = VideoIndex(tmp_path / "idx", tiny_model, frames=2)
    with index:
        assert index.num_frames == 2 and index.settings["frames"] == "2"  # the stored key is unchanged
        with pytest.warns(DeprecationWarning, match=r"VideoIndex.frames is deprecated; use .num_frames"):
            assert index.frames == 2


def test_tokens_is_the_old_name_of_video_tokens(tiny_model):
    size = tiny_model.info.image_size
    _, video_tokens = tiny_model.encode_video(torch.zeros(1, 1, 3, size, size), return_tokens=True)
    want = tiny_model.generate(video_tokens=video_tokens, method="greedy", max_len=3, min_len=1)
    with pytest.warns(DeprecationWarning, match=r"VideoCoCa.generate\(tokens=...\) is deprecated; use video_tokens="):
        assert tiny_model.generate(tokens=video_tokens, method="greedy", max_len=3, min_len=1) == want
    with pytest.warns(DeprecationWarning, match=r"VideoCoCa.answer\(tokens=...\) is deprecated"):
        old = tiny_model.answer(tokens=video_tokens, questions="what is it?", max_len=3)
    assert old == tiny_model.answer(video_tokens=video_tokens, questions="what is it?", max_len=3)
    for method in (tiny_model.generate, tiny_model.answer):
        with pytest.raises(TypeError, match="got both tokens= and video_tokens="):
            method(tokens=video_tokens, video_tokens=video_tokens)
    clip = EncodedClip(None, torch.zeros(4), video_tokens[0])
    with pytest.warns(DeprecationWarning, match=r"EncodedClip.tokens is deprecated; use .video_tokens"):
        assert clip.tokens is clip.video_tokens
