"""Is the direction of motion in the frozen frame tokens?  Linear probes on a finetuning feature cache.

Reads the synthetic training videos' cached tokens (T, N, W) and their motion answers (left/right/up/down),
fits a linear classifier on 3/4 of the videos for each feature and reports held-out accuracy (chance 25%):
  CLS per frame          the T class tokens, concatenated
  CLS last - first       the change of the class token
  patch mean per frame   the T mean patch tokens
  saliency centroid      per frame, the centroid of |token - median token| over the patch grid (x, y)
  saliency maps          the T maps of |token - median token| over the patch grid
Run (after `videococa cache-features` on the 600-video synthetic training set, see bench/RESULTS.md):
  .venv/bin/python scripts/probe_motion.py --features feats --videos 600 --seed 7
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from videococa.synthetic.benchmark import load_benchmark, make_benchmark
from videococa.train import FeatureCache, clip_key

DIRECTIONS = ["left", "right", "up", "down"]


def probe(feats: torch.Tensor, y: torch.Tensor, steps: int = 500) -> tuple[float, float]:
    """(train, held-out) accuracy of a linear classifier on standardised features; last quarter held out."""
    n = len(y) * 3 // 4
    feats = (feats - feats[:n].mean(0)) / (feats[:n].std(0) + 1e-5)
    lin = torch.nn.Linear(feats.shape[1], len(DIRECTIONS))
    opt = torch.optim.AdamW(lin.parameters(), 1e-2, weight_decay=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(lin(feats[:n]), y[:n]).backward()
        opt.step()
    with torch.no_grad():
        pred = lin(feats).argmax(1)
    return float((pred[:n] == y[:n]).float().mean()), float((pred[n:] == y[n:]).float().mean())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", required=True)
    ap.add_argument("--videos", type=int, default=600)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    items, _ = load_benchmark(make_benchmark(None, num_videos=args.videos, seed=args.seed))
    cache = FeatureCache(args.features)
    xs, ys = [], []
    for it in items:
        answer = [a for _, a, kind in it.questions if kind == "motion"]
        if answer and answer[0] in DIRECTIONS and clip_key(it.path) in cache:
            xs.append(cache.get(clip_key(it.path)).float())
            ys.append(DIRECTIONS.index(answer[0]))
    x, y = torch.stack(xs), torch.tensor(ys)  # (V, T, N, W), (V,)
    sal = (x[:, :, 1:] - x[:, :, 1:].median(2, keepdim=True).values).norm(dim=-1)  # (V, T, N-1)
    g = int(sal.shape[-1] ** 0.5)
    w = torch.softmax(sal * 3, -1).reshape(*sal.shape[:2], g, g)  # (V, T, g, g)
    grid = torch.arange(g).float()
    centroid = torch.cat([(w.sum(2) * grid).sum(-1), (w.sum(3) * grid).sum(-1)], 1)  # (V, 2T)
    print(f"{len(y)} videos with a motion question; chance 25%")
    print("| feature | train | held-out |\n|---|---|---|")
    for name, f in [("CLS per frame", x[:, :, 0].flatten(1)), ("CLS last - first", x[:, -1, 0] - x[:, 0, 0]),
                    ("patch mean per frame", x[:, :, 1:].mean(2).flatten(1)),
                    ("saliency centroid per frame", centroid), ("saliency maps (T x patches)", sal.flatten(1))]:
        tr, te = probe(f, y)
        print(f"| {name} | {tr:.0%} | {te:.0%} |")


if __name__ == "__main__":
    main()
