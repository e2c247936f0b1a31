"""Tier 1: metrics on hand-built cases with known answers, and parity with the COCO caption evaluation code."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from videococa.eval import (bleu, caption_metrics, charades_map, cider_d, moment_metrics, qa_accuracy, qa_scores,
                            recall_metrics, retrieval_ranks, rouge_l, temporal_iou, temporal_nms, tokenize,
                            topk_accuracy, vqa_normalize)


def test_topk_accuracy_with_ties():
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.2, 0.6], [0.5, 0.5, 0.0]])
    assert topk_accuracy(scores, [0, 1, 1], k=1) == pytest.approx(1 / 3)  # tie in row 3 goes to class 0
    assert topk_accuracy(scores, [0, 1, 1], k=2) == pytest.approx(2 / 3)  # row 2's class 1 is third
    assert topk_accuracy(scores, [0, 1, 1], k=3) == 1.0
    with pytest.raises(ValueError, match="one label per row"):
        topk_accuracy(scores, [0, 1])


def test_charades_map_by_hand():
    scores = np.array([[0.9, 0.1, 0.5], [0.8, 0.2, 0.5], [0.7, 0.3, 0.5], [0.6, 0.4, 0.5], [0.99, 0.99, 0.99]])
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]])  # last video: no label at all
    m, aps = charades_map(scores, targets)
    assert aps[0] == pytest.approx((1 / 1 + 2 / 3) / 2)  # positives ranked 1st and 3rd; unlabeled video sinks
    assert aps[1] == pytest.approx((1 / 1 + 2 / 3) / 2)  # class 1: positives (0.4, 0.2) rank 1st and 3rd
    assert math.isnan(aps[2]) and m == pytest.approx((aps[0] + aps[1]) / 2)


def test_retrieval_ranks_with_ties_and_several_captions_per_video():
    # 4 texts, 3 videos; texts 0 and 1 describe video 0, text 2 video 1, text 3 video 2
    sim = np.array([
        [0.9, 0.1, 0.2],
        [0.3, 0.5, 0.3],   # its video (0) ties with video 2 and trails video 1 -> rank 2
        [0.4, 0.4, 0.1],   # tie with video 0 goes in the query's favour -> rank 1
        [0.8, 0.0, 0.7],   # rank 2
    ])
    t2v, v2t = retrieval_ranks(sim, [0, 0, 1, 2])
    assert t2v.tolist() == [2 - 1, 2, 1, 2]
    # video 0: best own text 0.9, others 0.4, 0.8 -> rank 1; video 1: own 0.4, others 0.1, 0.5 -> 2; video 2: own 0.7, others 0.2, 0.3 -> 1
    assert v2t.tolist() == [1, 2, 1]
    r = recall_metrics(t2v)
    assert (r["R@1"], r["R@5"], r["MdR"], r["MnR"]) == (50.0, 100.0, 1.5, 1.5)
    with pytest.raises(ValueError, match="video 1 has no text"):
        retrieval_ranks(sim[:, :], [0, 0, 2, 2])


def test_qa_accuracy_uses_the_vqa_normalisation():
    assert qa_accuracy(["A dog.", "two"], ["dog", "2"]) == 1.0  # issue #19: this scored 0
    assert qa_accuracy(["Red.", "two", "a dog", "cat"], ["red", ["2", "two"], "dog", "dog"]) == 0.75
    with pytest.raises(ValueError, match="one prediction per answer"):
        qa_accuracy(["a"], [])
    with pytest.raises(ValueError, match="agreement must be a positive integer"):
        qa_accuracy(["a"], ["a"], agreement=0)


@pytest.mark.parametrize("raw,normalised", [
    ("A dog.", "dog"),                       # article and final period go
    ("The Three cats", "3 cats"),            # number words become digits, lowercase
    ("none", "0"),
    ("dont know", "don't know"),             # contractions get their apostrophe
    ("isnt it", "isn't it"),
    ("3.5 metres", "3.5 metres"),            # a period before a digit stays
    ("1,000 apples!", "1000 apples"),        # a comma between digits: punctuation is deleted, not spaced
    ("black-and-white", "black and white"),  # punctuation inside a word becomes a space
    ("red , blue", "red blue"),              # punctuation touching a space is deleted
    ("an\tapple\n", "apple"),
])
def test_vqa_normalisation_rules(raw, normalised):
    assert vqa_normalize(raw) == normalised


def test_ivqa_metric_counts_annotators():
    refs = ["onion", "onion", "onions", "onion", "garlic"]  # five annotators
    assert qa_scores(["onion", "garlic", "leek", "Onions."], [refs] * 4, agreement=2) == [1.0, 0.5, 0.0, 0.5]
    assert qa_accuracy(["onion", "garlic", "leek", "Onions."], [refs] * 4, agreement=2) == 0.5
    assert qa_accuracy(["garlic"], [refs]) == 1.0  # agreement 1: one annotator is enough


def test_temporal_iou_and_nms_on_hand_built_spans():
    assert temporal_iou((0, 10), (5, 15)) == pytest.approx(5 / 15)
    assert temporal_iou((0, 4), (4, 8)) == 0.0 and temporal_iou((2, 6), (2, 6)) == 1.0
    assert temporal_iou((1, 3), (0, 10)) == pytest.approx(0.2)
    spans = [(0, 10), (1, 10), (20, 30), (22, 30), (40, 50)]
    scores = [0.9, 0.8, 0.7, 0.95, 0.1]
    # (22,30) best; (20,30) overlaps it with IoU 0.8 -> dropped; (0,10) kept; (1,10) IoU 0.9 with it -> dropped
    assert temporal_nms(spans, scores, threshold=0.5) == [3, 0, 4]
    assert temporal_nms(spans, scores, threshold=0.5, top_k=2) == [3, 0]
    assert temporal_nms(spans, scores, threshold=0.95) == [3, 0, 1, 2, 4]


def test_moment_metrics_exact_values():
    targets = [(10.0, 20.0), (0.0, 4.0), (30.0, 40.0)]
    predictions = [
        [(10.0, 20.0)],                                  # IoU 1
        [(0.0, 8.0), (0.0, 4.0)],                        # top-1 IoU 0.5, top-2 IoU 1
        [(0.0, 5.0), (1, 2), (2, 3), (3, 4), (30, 36), (30, 40)],  # top-5 best IoU 0.6; the 6th is out of R@5
    ]
    m = moment_metrics(predictions, targets)
    assert m["R@1 IoU=0.5"] == pytest.approx(200 / 3) and m["R@1 IoU=0.7"] == pytest.approx(100 / 3)
    assert m["R@5 IoU=0.5"] == 100.0 and m["R@5 IoU=0.7"] == pytest.approx(200 / 3)
    assert m["mIoU"] == pytest.approx((1.0 + 0.5 + 0.0) / 3 * 100)
    with pytest.raises(ValueError, match="at least one predicted span"):
        moment_metrics([[]], [(0, 1)])
    with pytest.raises(ValueError, match="one ranked list per target"):
        moment_metrics([[(0, 1)]], [])


def test_tokenize_like_ptb():
    assert tokenize("A man, riding a horse!") == "a man riding a horse"
    assert tokenize("The dog's ball -- it's red...") == "the dog's ball it's red"


def _corpus(seed: int, n: int = 40):
    rng = random.Random(seed)
    words = "a the man woman dog cat is are riding playing with ball red blue on in park street".split()
    sent = lambda: " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))  # noqa: E731
    refs = {i: [sent() for _ in range(rng.randint(1, 5))] for i in range(n)}
    hyps = {i: (refs[i][0] if rng.random() < 0.2 else sent()) for i in range(n)}
    return refs, hyps


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_caption_metrics_match_pycocoevalcap(seed):
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    refs, hyps = _corpus(seed)
    gts, res = {i: refs[i] for i in refs}, {i: [hyps[i]] for i in hyps}
    want_bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert bleu(refs, hyps) == pytest.approx(want_bleu, rel=1e-9, abs=1e-12)
    assert rouge_l(refs, hyps) == pytest.approx(Rouge().compute_score(gts, res)[0], rel=1e-9)
    want_cider, want_items = Cider().compute_score(gts, res)
    got_cider, got_items = cider_d(refs, hyps)
    assert got_cider == pytest.approx(want_cider, rel=1e-9)
    np.testing.assert_allclose(got_items, want_items, rtol=1e-9)


def test_caption_metrics_known_values():
    refs = {0: ["a red circle moving left"], 1: ["a blue square"]}
    perfect = caption_metrics(refs, {0: "a red circle moving left", 1: "a blue square"}, tokenized=True)
    assert perfect["BLEU-1"] == pytest.approx(100) and perfect["ROUGE-L"] == pytest.approx(100)
    wrong = caption_metrics(refs, {0: "zebra", 1: "zebra"}, tokenized=True)
    assert wrong["BLEU-1"] < 1e-6 and wrong["ROUGE-L"] == 0 and wrong["CIDEr"] == 0
    with pytest.raises(ValueError, match="same ids"):
        bleu(refs, {0: "x"})


def test_meteor_is_computed_with_java_or_reported_missing():
    import shutil

    refs = {0: ["a man is riding a horse"], 1: ["a woman is slicing an onion"]}
    out = caption_metrics(refs, {0: "a man rides a horse", 1: "a woman is cutting an onion"}, with_meteor=True)
    if shutil.which("java") is None:
        assert out["METEOR"].startswith("not computed: METEOR needs Java")
    else:
        pytest.importorskip("pycocoevalcap")
        assert 30 < out["METEOR"] < 100  # stems and synonyms earn partial credit; not identical captions
