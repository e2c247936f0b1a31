"""Evaluate a model on the synthetic video benchmark: zero-shot classification, text->video retrieval,
captioning (CIDEr and colour+shape mentions) and question answering, for attentional pooling over all
frames, mean pooling, and the middle frame alone. Every number goes through `videococa eval`'s runner;
`videococa eval TASK --dataset synthetic --annotations .../annotations.json` gives the same per task.

python -m videococa.synthetic.evaluate [--videos 500] [--frames 8] [--json]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
import json
import sys
from pathlib import Path

from ..eval.runner import CAPTION_DECODING, evaluate_dataset, read_synthetic
from ..models import VideoCoCa, load_model
from .benchmark import make_benchmark
from .world import CLASS_NAMES

VARIANTS = ("attentional", "mean", "middle frame")


VARIANT_SETTINGS = {"attentional": ("attentional", None), "mean": ("mean", None), "middle frame": ("attentional", 1)}
"""variant -> (pooling, num_frames); None: the run's frame count. One uniformly sampled frame is the middle one."""


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
    """Every task of the benchmark for each variant, through the `videococa eval` runner.

    `limit` keeps the first N videos (all questions of those videos for QA).
    """

    ann = Path(root) / "annotations.json"
    results: dict = {"videos": None, "frames": num_frames, "classes": len(CLASS_NAMES),
                     "chance_top1": 1 / len(CLASS_NAMES), "variants": {}}
    for variant in variants:
        pooling, variant_num_frames = VARIANT_SETTINGS[variant]
        out = {}
        for task in ("classify", "retrieve", "caption", "qa"):
            ds = read_synthetic(ann, task)
            if limit:
                first = set(list(dict.fromkeys(it.video_id for it in ds.items))[:limit])
                ds.items = [it for it in ds.items if it.video_id in first]
            r = evaluate_dataset(model, ds, num_frames=variant_num_frames or num_frames, pooling=pooling,
                                 generation=replace(CAPTION_DECODING, method=caption_method, max_len=16),
                                 progress=progress, meteor=False)
            out[task] = r["metrics"]
            results["videos"] = r["protocol"]["videos_used"]
        c, t, cap, qa = out["classify"], out["retrieve"], out["caption"], out["qa"]
        results["variants"][variant] = {
            "classification_top1": c["top1"] / 100,
            "classification_top1_late_videos": c.get("top1[late]", float("nan")) / 100,
            "text_to_video_R@1": t["t2v R@1"] / 100,
            "text_to_video_R@5": t["t2v R@5"] / 100,
            "caption_CIDEr": cap["CIDEr"] / 100,
            "caption_mentions_both": cap["mentions label"] / 100,
            "qa_accuracy": qa["accuracy"] / 100,
            "qa_accuracy_by_kind": {k[9:-1]: v / 100 for k, v in qa.items() if k.startswith("accuracy[")},
            "caption_examples": cap["examples"],
        }
    return results


def markdown(results: dict) -> str:
    """The README / RESULTS table."""
    kinds = ("colour", "shape", "count", "size", "motion", "late")
    rows = ["| pooling | top-1 (all) | top-1 (late-entry videos) | T->V R@1 | T->V R@5 | caption CIDEr | "
            "caption: colour+shape | QA (all) | " + " | ".join(f"QA {k}" for k in kinds) + " |",
            "|---|---|---|---|---|---|---|---|" + "---|" * len(kinds)]
    for name, r in results["variants"].items():
        by = r["qa_accuracy_by_kind"]
        rows.append(
            f"| {name} | {r['classification_top1']:.1%} | {r['classification_top1_late_videos']:.1%} | "
            f"{r['text_to_video_R@1']:.1%} | {r['text_to_video_R@5']:.1%} | {r['caption_CIDEr'] * 100:.1f} | "
            f"{r['caption_mentions_both']:.1%} | {r['qa_accuracy']:.1%} | "
            + " | ".join(f"{by.get(k, float('nan')):.1%}" for k in kinds) + " |"
        )
    return "\n".join(rows)


def main(argv=None) -> int:

    p = argparse.ArgumentParser(prog="python -m videococa.synthetic.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="videococa-tiny")
    p.add_argument("--pretrained", default=None)
    p.add_argument("--videos", type=int, default=500)
    p.add_argument("--frames", "--num-frames", dest="num_frames", type=int, default=8)
    p.add_argument("--root", default=None, help="benchmark folder (default: generated in the cache)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    model = load_model(args.model, args.pretrained)
    root = make_benchmark(args.root, num_videos=args.videos)
    results = evaluate(model, root, num_frames=args.num_frames, progress=sys.stderr.isatty())
    results.update(model=args.model, pretrained=model.info.pretrained, root=str(root))
    print(json.dumps(results, indent=1) if args.json else markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
