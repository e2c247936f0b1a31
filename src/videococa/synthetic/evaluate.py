"""Evaluate a model on the synthetic video benchmark: zero-shot classification, text->video retrieval,
caption mentions and question answering, for attentional pooling over all frames, mean pooling,
and the middle frame alone.

python -m videococa.synthetic.evaluate [--videos 500] [--frames 8] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

from ..models.videococa import VideoCoCa
from ..tasks.classify import ensemble_text_embeddings
from ..video import read_video
from .benchmark import load_benchmark, make_benchmark
from .world import CLASS_NAMES

CLASS_TEMPLATES = ("a {}", "a picture of a {}", "there is a {}")
VARIANTS = ("attentional", "mean", "middle frame")


def load_frames(model: VideoCoCa, paths: list[str], num_frames: int, progress: bool = False) -> torch.Tensor:
    """(N, T, 3, S, S) frames of every video, read at the model's input size."""
    info = model.info
    out = []
    for p in tqdm(paths, desc="read videos", disable=not progress, unit="video"):
        out.append(read_video(p, num_frames, size=info.image_size, mean=info.image_mean, std=info.image_std).frames)
    return torch.stack(out)


def class_embeddings(model: VideoCoCa, classes=CLASS_NAMES, templates=CLASS_TEMPLATES) -> torch.Tensor:
    """Mean of the L2-normalised template embeddings per class, re-normalised (CLIP's ensembling)."""
    return ensemble_text_embeddings(model, classes, templates)  # (C, E)


def _encode(model: VideoCoCa, frames: torch.Tensor, variant: str, batch: int = 32):
    embs, toks = [], []
    for chunk in frames.split(batch):
        if variant == "middle frame":
            mid = chunk.shape[1] // 2
            e, t = model.encode_video(chunk[:, mid : mid + 1], return_tokens=True)
        else:
            e, t = model.encode_video(chunk, pooling=variant, return_tokens=True)
        embs.append(e)
        toks.append(t)
    return torch.cat(embs), torch.cat(toks)


def recall_at(sim: torch.Tensor, k: int) -> float:
    """Text->video recall@k where query i's correct video is video i. sim (queries, videos)."""
    correct = sim.diag()[:, None]
    rank = (sim > correct).sum(1)  # videos strictly better than the right one
    return float((rank < k).float().mean())


def mentions(caption: str, word: str) -> bool:
    """Whether `word` occurs in the caption as a whole word."""
    return word in caption.lower().replace(",", " ").split()


def evaluate(
    model: VideoCoCa,
    root: str | Path,
    *,
    num_frames: int = 8,
    limit: int | None = None,
    variants=VARIANTS,
    caption_method: str = "beam",
    progress: bool = False,
) -> dict:
    """All benchmark numbers for each pooling variant, as a nested dict."""
    items, _ = load_benchmark(root)
    items = items[:limit] if limit else items
    frames = load_frames(model, [it.path for it in items], num_frames, progress)
    classes = list(CLASS_NAMES)
    cls_emb = class_embeddings(model, classes)
    labels = torch.tensor([classes.index(it.label) for it in items])
    late = torch.tensor([it.late for it in items])
    txt = model.encode_text([it.captions[0] for it in items])
    results: dict = {"videos": len(items), "frames": num_frames, "classes": len(classes),
                     "chance_top1": 1 / len(classes), "variants": {}}
    for variant in variants:
        t0 = time.perf_counter()
        emb, tokens = _encode(model, frames, variant)
        pred = (emb @ cls_emb.T).argmax(-1)
        sim = txt @ emb.T
        caps = []
        for chunk in tokens.split(64):
            caps += model.generate(tokens=chunk, method=caption_method, num_beams=3, max_len=16, min_len=2)
        colour_ok = [mentions(c, it.label.split()[0]) for it, c in zip(items, caps)]
        shape_ok = [mentions(c, it.label.split()[1]) for it, c in zip(items, caps)]
        both_ok = [a and b for a, b in zip(colour_ok, shape_ok)]
        qa = defaultdict(list)
        for kind in ("colour", "shape", "count", "size", "motion", "late"):
            idx = [i for i, it in enumerate(items) if any(q[2] == kind for q in it.questions)]
            if not idx:
                continue
            qs = [next(q for q in items[i].questions if q[2] == kind) for i in idx]
            answers = []
            for start in range(0, len(idx), 64):
                sel = idx[start : start + 64]
                answers += model.answer(tokens=tokens[sel], questions=[q[0] for q in qs[start : start + 64]])
            qa[kind] = [a == q[1] for a, q in zip(answers, qs)]
        all_qa = [x for v in qa.values() for x in v]
        results["variants"][variant] = {
            "classification_top1": float((pred == labels).float().mean()),
            "classification_top1_late_videos": float((pred[late] == labels[late]).float().mean()) if late.any() else None,
            "text_to_video_R@1": recall_at(sim, 1),
            "text_to_video_R@5": recall_at(sim, 5),
            "caption_mentions_colour": sum(colour_ok) / len(items),
            "caption_mentions_shape": sum(shape_ok) / len(items),
            "caption_mentions_both": sum(both_ok) / len(items),
            "qa_accuracy": sum(all_qa) / len(all_qa),
            "qa_accuracy_by_kind": {k: sum(v) / len(v) for k, v in qa.items()},
            "caption_examples": [[it.captions[0], c] for it, c in list(zip(items, caps))[:5]],
            "seconds": round(time.perf_counter() - t0, 1),
        }
    return results


def markdown(results: dict) -> str:
    """The README / RESULTS table."""
    rows = ["| pooling | top-1 (all) | top-1 (late-entry videos) | T->V R@1 | T->V R@5 | caption: colour+shape | QA (all) | "
            + " | ".join(f"QA {k}" for k in ("colour", "shape", "count", "size", "motion", "late")) + " |",
            "|---|---|---|---|---|---|---|" + "---|" * 6]
    for name, r in results["variants"].items():
        by = r["qa_accuracy_by_kind"]
        late = r["classification_top1_late_videos"]
        rows.append(
            f"| {name} | {r['classification_top1']:.1%} | {'-' if late is None else f'{late:.1%}'} | "
            f"{r['text_to_video_R@1']:.1%} | {r['text_to_video_R@5']:.1%} | {r['caption_mentions_both']:.1%} | "
            f"{r['qa_accuracy']:.1%} | " + " | ".join(f"{by.get(k, float('nan')):.1%}" for k in
                                                       ("colour", "shape", "count", "size", "motion", "late")) + " |"
        )
    return "\n".join(rows)


def main(argv=None) -> int:
    from ..models import load_model

    p = argparse.ArgumentParser(prog="python -m videococa.synthetic.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="videococa-tiny")
    p.add_argument("--pretrained", default=None)
    p.add_argument("--videos", type=int, default=500)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--root", default=None, help="benchmark folder (default: generated in the cache)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    model = load_model(args.model, args.pretrained)
    root = make_benchmark(args.root, num_videos=args.videos)
    results = evaluate(model, root, num_frames=args.frames, progress=sys.stderr.isatty())
    results.update(model=args.model, pretrained=model.info.pretrained, root=str(root))
    print(json.dumps(results, indent=1) if args.json else markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
