"""Benchmark metrics in numpy / pure Python, each following the reference implementation named in its docstring.

Caption metrics take tokenised text (tokens joined by single spaces), as the COCO caption evaluation
code (coco-caption / pycocoevalcap) does after its PTB tokenizer; `tokenize` is our stand-in for that
Java tokenizer (lowercase, punctuation split off and dropped). On the same tokenised input, BLEU,
ROUGE-L and CIDEr-D give pycocoevalcap's values (tests/eval/test_metrics.py compares them).
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from typing import Mapping, Sequence

import numpy as np

from ..text import vqa_normalize  # noqa: F401 - the metrics compare answers through it
from ..errors import OptionError

# --------------------------------------------------------------------------- classification


def topk_accuracy(scores: np.ndarray, labels: Sequence[int], k: int = 1) -> float:
    """Share of rows whose true label is among the k highest scores. scores (N, C), labels (N,).

    Ties are broken by class index (lower first), as a stable sort does.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 2 or len(labels) != len(scores):
        raise OptionError(f"scores must be (N, C) with one label per row; got {scores.shape} and {len(labels)} labels")
    if len(labels) == 0:
        raise OptionError("no items to score")
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def charades_map(scores: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """(mAP, per-class AP) by the Charades protocol (the dataset's official `charades_map`).

    scores, targets (N, C); targets are 0/1. Videos without any label are ranked last for every class;
    AP of a class is the mean precision at each positive in the score ranking; classes with no positive
    are left out of the mean (their AP is NaN).
    """
    scores = np.asarray(scores, dtype=np.float64).copy()
    targets = np.asarray(targets)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise OptionError(f"scores and targets must both be (N, C); got {scores.shape} and {targets.shape}")
    scores[targets.sum(1) == 0, :] = -np.inf
    aps = np.full(scores.shape[1], np.nan)
    for c in range(scores.shape[1]):
        order = np.argsort(-scores[:, c], kind="stable")
        tp = targets[order, c] == 1
        n_pos = tp.sum()
        if n_pos == 0:
            continue
        precision = np.cumsum(tp) / np.arange(1, len(tp) + 1)
        aps[c] = precision[tp].sum() / n_pos
    return float(np.nanmean(aps)), aps


# --------------------------------------------------------------------------- retrieval


def retrieval_ranks(sim: np.ndarray, text_to_video: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks of the right answer for each text (text->video) and each video (video->text).

    sim (num_texts, num_videos); `text_to_video[i]` is the video text i describes (several texts may
    describe one video). The rank counts candidates scored strictly higher, plus one: ties go in the
    query's favour, as in CLIP4Clip's `compute_metrics`. Video->text ranks the best-placed of a video's texts.
    """
    sim = np.asarray(sim, dtype=np.float64)
    owner = np.asarray(text_to_video)
    n_texts, n_videos = sim.shape
    if len(owner) != n_texts:
        raise OptionError(f"text_to_video has {len(owner)} entries for {n_texts} texts")
    if owner.min() < 0 or owner.max() >= n_videos:
        raise OptionError("text_to_video names a video outside the similarity matrix")
    correct = sim[np.arange(n_texts), owner]
    t2v = (sim > correct[:, None]).sum(1) + 1
    v2t = np.empty(n_videos, dtype=np.int64)
    for v in range(n_videos):
        mine = owner == v
        if not mine.any():
            raise OptionError(f"video {v} has no text; every video needs at least one for video->text ranks")
        best = sim[mine, v].max()
        v2t[v] = (sim[~mine, v] > best).sum() + 1
    return t2v, v2t


def recall_metrics(ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """R@k (in %), median rank and mean rank from 1-based ranks."""
    ranks = np.asarray(ranks)
    out = {f"R@{k}": float((ranks <= k).mean() * 100) for k in ks}
    out["MdR"] = float(np.median(ranks))
    out["MnR"] = float(ranks.mean())
    return out


# --------------------------------------------------------------------------- question answering
# (answers are compared after videococa.text.vqa_normalize)


# The answer normalisation of the official VQA evaluation script (vqaEval.py in GT-Vision-Lab/VQA,
# PythonEvaluationTools/vqaEvaluation: processPunctuation and processDigitArticle), the one video-QA work uses.
def qa_scores(predictions: Sequence[str], answers: Sequence[str | Sequence[str]], *,
              agreement: int = 1) -> list[float]:
    """Per-question scores: min(1, number of reference answers equal to the prediction / `agreement`), both
    sides normalised by `vqa_normalize`.

    With one reference answer (MSRVTT-QA, MSVD-QA, ActivityNet-QA) this is exact match. iVQA's official
    metric (Yang et al. 2021, "Just Ask") uses its five annotators' answers with `agreement=2`: an answer two
    annotators gave scores 1, one annotator's 0.5. Repeated references count once per annotator.
    """
    if len(predictions) != len(answers) or not predictions:
        raise OptionError(f"need one prediction per answer (got {len(predictions)} and {len(answers)})")
    if not isinstance(agreement, int) or agreement < 1:
        raise OptionError(f"agreement must be a positive integer, got {agreement!r}")
    out = []
    for p, a in zip(predictions, answers):
        refs = [vqa_normalize(x) for x in ([a] if isinstance(a, str) else a)]
        out.append(min(1.0, refs.count(vqa_normalize(p)) / agreement))
    return out


def qa_accuracy(predictions: Sequence[str], answers: Sequence[str | Sequence[str]], *, agreement: int = 1) -> float:
    """Mean of `qa_scores`: exact match after VQA normalisation, or the iVQA metric with `agreement=2`."""
    return float(np.mean(qa_scores(predictions, answers, agreement=agreement)))


# --------------------------------------------------------------------------- moment retrieval


def temporal_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Intersection over union of two time spans (start, end)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def temporal_nms(spans: Sequence[tuple[float, float]], scores: Sequence[float], *, threshold: float = 0.5,
                 top_k: int | None = None) -> list[int]:
    """Indices of spans kept by greedy temporal non-maximum suppression, best score first: a span is dropped
    when its IoU with an already kept one is at least `threshold`. Ties keep the earlier span."""
    order = sorted(range(len(spans)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        if all(temporal_iou(spans[i], spans[j]) < threshold for j in kept):
            kept.append(i)
            if top_k is not None and len(kept) == top_k:
                break
    return kept


def moment_metrics(predictions: Sequence[Sequence[tuple[float, float]]], targets: Sequence[tuple[float, float]], *,
                   ks: Sequence[int] = (1, 5), ious: Sequence[float] = (0.5, 0.7)) -> dict[str, float]:
    """Moment retrieval metrics (in %), as Charades-STA work reports them (2D-TAN, Moment-DETR).

    `predictions[i]`: ranked spans for query i (best first); `targets[i]`: its annotated span.
    "R@k IoU=m": share of queries with a span of IoU >= m among the top k; "mIoU": mean IoU of the top span.
    """
    if len(predictions) != len(targets) or not targets:
        raise OptionError(f"need one ranked list per target (got {len(predictions)} and {len(targets)})")
    if any(not p for p in predictions):
        raise OptionError("every query needs at least one predicted span")
    iou = [[temporal_iou(s, t) for s in p] for p, t in zip(predictions, targets)]
    out = {f"R@{k} IoU={m}": float(np.mean([max(row[:k]) >= m for row in iou]) * 100) for m in ious for k in ks}
    out["mIoU"] = float(np.mean([row[0] for row in iou]) * 100)
    return out


# --------------------------------------------------------------------------- captions

_PUNCT = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]+")


def tokenize(text: str) -> str:
    """Lowercase, split punctuation off and drop it (what coco-caption's PTB tokenizer does to plain captions)."""
    return " ".join(t for t in _TOKEN.findall(text.lower()) if t not in _PUNCT and not re.fullmatch(r"[^\w]+", t))


def _ngrams(words: Sequence[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def _check_caption_input(refs: Mapping, hyps: Mapping) -> list:
    if set(refs) != set(hyps):
        raise OptionError("references and hypotheses must have the same ids")
    if not hyps:
        raise OptionError("no captions to score")
    for k in hyps:
        if not refs[k]:
            raise OptionError(f"item {k!r} has no reference caption")
    return list(hyps)  # input order, as coco-caption iterates its dicts


def bleu(refs: Mapping[object, Sequence[str]], hyps: Mapping[object, str], n: int = 4) -> list[float]:
    """Corpus BLEU-1..n as coco-caption's BleuScorer computes it (option 'closest' reference length)."""
    ids = _check_caption_input(refs, hyps)
    small, tiny = 1e-9, 1e-15
    guess, correct = [0] * n, [0] * n
    testlen = reflen = 0
    for k in ids:
        hyp = hyps[k].split()
        ref_words = [r.split() for r in refs[k]]
        maxcounts: dict[tuple, int] = {}
        for r in ref_words:
            for m in range(1, n + 1):
                for g, c in _ngrams(r, m).items():
                    maxcounts[g] = max(maxcounts.get(g, 0), c)
        testlen += len(hyp)
        reflen += min((abs(len(r) - len(hyp)), len(r)) for r in ref_words)[1]
        for m in range(1, n + 1):
            counts = _ngrams(hyp, m)
            guess[m - 1] += max(0, len(hyp) - m + 1)
            correct[m - 1] += sum(min(c, maxcounts.get(g, 0)) for g, c in counts.items())
    out, prod = [], 1.0
    for m in range(n):
        prod *= (correct[m] + tiny) / (guess[m] + small)
        out.append(prod ** (1.0 / (m + 1)))
    ratio = (testlen + tiny) / (reflen + small)
    if ratio < 1:
        out = [b * math.exp(1 - 1 / ratio) for b in out]
    return out


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(refs: Mapping[object, Sequence[str]], hyps: Mapping[object, str], beta: float = 1.2) -> float:
    """Mean ROUGE-L F-measure over items, as coco-caption's Rouge (beta 1.2, best precision and recall over refs)."""
    ids = _check_caption_input(refs, hyps)
    scores = []
    for k in ids:
        hyp = hyps[k].split()
        precs, recs = [], []
        for r in refs[k]:
            rw = r.split()
            lcs = _lcs(rw, hyp)
            precs.append(lcs / len(hyp) if hyp else 0.0)
            recs.append(lcs / len(rw) if rw else 0.0)
        p, r = max(precs), max(recs)
        scores.append(((1 + beta**2) * p * r) / (r + beta**2 * p) if p != 0 and r != 0 else 0.0)
    return float(np.mean(scores))


def cider_d(refs: Mapping[object, Sequence[str]], hyps: Mapping[object, str], n: int = 4,
            sigma: float = 6.0) -> tuple[float, list[float]]:
    """(corpus CIDEr-D, per-item scores) as coco-caption's Cider: tf-idf n-gram cosine, clipped,
    Gaussian length penalty (sigma 6), x10; document frequencies from this corpus's references."""
    ids = _check_caption_input(refs, hyps)

    def counts(text: str) -> Counter:
        words = text.split()
        c: Counter = Counter()
        for m in range(1, n + 1):
            c.update(_ngrams(words, m))
        return c

    crefs = {k: [counts(r) for r in refs[k]] for k in ids}
    df: Counter = Counter()
    for k in ids:
        for g in {g for c in crefs[k] for g in c}:
            df[g] += 1
    log_n = math.log(float(len(ids)))

    def vec(c: Counter):
        v: list[dict] = [defaultdict(float) for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for g, tf in c.items():
            m = len(g) - 1
            v[m][g] = float(tf) * (log_n - math.log(max(1.0, df[g])))
            norm[m] += v[m][g] ** 2
            if m == 1:  # coco-caption counts bigrams here; kept for parity
                length += tf
        return v, [math.sqrt(x) for x in norm], length

    per_item = []
    for k in ids:
        vh, nh, lh = vec(counts(hyps[k]))
        total = np.zeros(n)
        for cr in crefs[k]:
            vr, nr, lr = vec(cr)
            delta = float(lh - lr)
            for m in range(n):
                val = sum(min(vh[m][g], vr[m][g]) * vr[m][g] for g in vh[m] if g in vr[m])
                if nh[m] != 0 and nr[m] != 0:
                    val /= nh[m] * nr[m]
                total[m] += val * math.e ** (-(delta**2) / (2 * sigma**2))
        per_item.append(float(total.mean() / len(crefs[k]) * 10.0))
    return float(np.mean(per_item)), per_item


def meteor(refs: Mapping[object, Sequence[str]], hyps: Mapping[object, str]) -> float | str:
    """METEOR 1.5 through coco-caption's Java jar (pycocoevalcap), or the reason it cannot be computed here."""
    import importlib.util
    import shutil

    if shutil.which("java") is None:
        return "not computed: METEOR needs Java (the METEOR 1.5 jar), and java is not on PATH"
    if importlib.util.find_spec("pycocoevalcap") is None:
        return "not computed: METEOR needs the METEOR 1.5 jar from pycocoevalcap (pip install pycocoevalcap)"
    from pycocoevalcap.meteor.meteor import Meteor

    ids = _check_caption_input(refs, hyps)
    scorer = Meteor()  # a java process; pycocoevalcap stops it when the object is deleted
    try:
        score, _ = scorer.compute_score({k: list(refs[k]) for k in ids}, {k: [hyps[k]] for k in ids})
    finally:
        del scorer
    return float(score)


def caption_metrics(refs: Mapping[object, Sequence[str]], hyps: Mapping[object, str], *,
                    tokenized: bool = False, with_meteor: bool = False) -> dict[str, float | str]:
    """BLEU-1..4, ROUGE-L and CIDEr-D (x100 like papers report them) for raw or tokenised captions;
    METEOR too when asked (a number when Java and the jar are present, else the reason it is missing)."""
    if not tokenized:
        refs = {k: [tokenize(r) for r in v] for k, v in refs.items()}
        hyps = {k: tokenize(v) for k, v in hyps.items()}
    b = bleu(refs, hyps)
    out: dict[str, float | str] = {f"BLEU-{i + 1}": b[i] * 100 for i in range(4)}
    out["ROUGE-L"] = rouge_l(refs, hyps) * 100
    out["CIDEr"] = cider_d(refs, hyps)[0] * 100
    if with_meteor:
        m = meteor(refs, hyps)
        out["METEOR"] = m * 100 if isinstance(m, float) else m
    return out
