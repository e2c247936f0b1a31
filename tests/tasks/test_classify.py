"""Zero-shot classification: CLIP's template ensembling, the on-disk text-embedding cache, easy videos."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from videococa import ZeroShotClassifier, read_video
from videococa.tasks import rank_texts
from videococa.testing import EASY_VIDEOS

CLASSES = [f"{colour} {shape}" for shape, colour, _ in EASY_VIDEOS]


def test_class_embedding_is_the_renormalised_mean_of_normalised_template_embeddings(tiny_model):
    templates = ["a {}.", "a video of a {}.", "there is a {} on the screen"]
    clf = ZeroShotClassifier(tiny_model, ["red circle", "blue square"], templates, cache=False)
    for i, name in enumerate(["red circle", "blue square"]):
        e = F.normalize(tiny_model.encode_text([t.format(name) for t in templates]), dim=-1)  # (K, E)
        expected = F.normalize(e.mean(0), dim=0)
        torch.testing.assert_close(clf.class_embeddings[i], expected, atol=1e-5, rtol=0)
    assert clf.class_embeddings.norm(dim=-1).sub(1).abs().max() < 1e-5


def test_text_embeddings_are_cached_on_disk_per_model(tiny_model, model, monkeypatch):
    first = ZeroShotClassifier(tiny_model, CLASSES, "kinetics")
    assert first.cache_path is not None and first.cache_path.is_file()

    def boom(texts):
        raise AssertionError("encode_text called although the cache holds these embeddings")

    monkeypatch.setattr(tiny_model, "encode_text", boom)
    again = ZeroShotClassifier(tiny_model, CLASSES, "kinetics")
    assert again.cache_path == first.cache_path
    torch.testing.assert_close(again.class_embeddings, first.class_embeddings)
    monkeypatch.undo()
    other_templates = ZeroShotClassifier(tiny_model, CLASSES, "single")
    assert other_templates.cache_path != first.cache_path
    other_model = ZeroShotClassifier(model, CLASSES, "kinetics")  # random B-32: another fingerprint, another file
    assert other_model.cache_path != first.cache_path


def test_a_damaged_cache_file_is_recomputed(tiny_model):
    clf = ZeroShotClassifier(tiny_model, CLASSES, "single")
    clf.cache_path.write_bytes(b"not a safetensors file")
    again = ZeroShotClassifier(tiny_model, CLASSES, "single")
    torch.testing.assert_close(again.class_embeddings, clf.class_embeddings)


def test_scores_softmax_and_multi_label(tiny_model):
    clf = ZeroShotClassifier(tiny_model, CLASSES, "single", cache=False)
    v = F.normalize(torch.randn(3, tiny_model.info.embed_dim), dim=-1)
    p = clf.scores(v)
    torch.testing.assert_close(p.sum(-1), torch.ones(3))
    multi = ZeroShotClassifier(tiny_model, CLASSES, "single", multi_label=True, cache=False)
    torch.testing.assert_close(multi.scores(v), v @ clf.class_embeddings.T)
    top = clf.classify(v, top_k=2)
    assert [len(t) for t in top] == [2, 2, 2] and all(t[0].score >= t[1].score for t in top)
    with pytest.raises(ValueError, match="top_k"):
        clf.classify(v, top_k=0)


def test_tiny_classifies_easy_videos(tiny_model, easy_videos):
    clf = ZeroShotClassifier(tiny_model, CLASSES, "single", cache=False)
    info = tiny_model.info
    frames = torch.stack([read_video(p, 8, size=info.image_size).frames for p in easy_videos])
    preds = clf(frames, top_k=1)
    assert [p[0].label for p in preds] == CLASSES


def test_rank_texts_for_a_video(tiny_model, easy_videos):
    info = tiny_model.info
    emb = tiny_model.encode_video(read_video(easy_videos[1], 8, size=info.image_size).frames[None])[0]
    ranked = rank_texts(tiny_model, emb, ["a red circle", "a blue square", "a green triangle"])
    assert ranked[0][0] == "a blue square" and ranked[0][1] > ranked[1][1] > ranked[2][1] - 1e-6
    with pytest.raises(ValueError, match="empty"):
        rank_texts(tiny_model, emb, ["ok", " "])
