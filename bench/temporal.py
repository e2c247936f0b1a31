"""What each `--temporal` variant costs: its new parameters and a cached finetuning step, side by side.

coca_ViT-B-32 in fp32 (random weights: the time does not depend on the values), a batch of B clips of T=8 frames
as cached frame tokens (B, T, 50, 768), captioning loss, AdamW over attn_pool + ln_post + text decoder + the
variant's new modules: one optimizer step per variant, the variants interleaved over --repeat rounds in one
process, reported as the median step time and its ratio to `none` (flattened pooling, nothing new).
Run: .venv/bin/python bench/temporal.py [--batch 4] [--repeat 5] [--device cpu|cuda]
"""

from __future__ import annotations

import statistics
import time

import torch

from common import header, random_b32, step_args

from videococa.models.videococa import TEMPORALS
from videococa.train.finetune import _Losses, trainable_parameters

FRAMES = 8


def _reset(model) -> None:
    model.temporal_embedding = model.temporal_mixer = model.temporal_trajectory = None


def main() -> None:
    args = step_args(__doc__)
    model = random_b32(args.device, precision="fp32")
    visual = model.coca.visual
    n = visual.positional_embedding.shape[0]
    tokens = torch.randn(args.batch, FRAMES, n, visual.transformer.width, device=model.device) * 9  # (B, T, N, W)
    texts = ["a small red circle moving left on a blue background"] * args.batch
    token_ids = model.tokenize(texts).to(model.device)
    token_ids = token_ids[:, : int((token_ids != 0).sum(1).max())]
    n_targets = int((token_ids[:, 1:] != 0).sum())
    setups = {}
    for kind in TEMPORALS:
        _reset(model)
        torch.manual_seed(0)
        model.enable_temporal(kind)
        new = {k: p for k, p in model.named_parameters() if k.startswith("temporal")}
        setups[kind] = (model.temporal_embedding, model.temporal_mixer, model.temporal_trajectory,
                        sum(p.numel() for p in new.values()))
    times: dict[str, list[float]] = {k: [] for k in TEMPORALS}
    model.train()
    for _ in range(args.repeat + 1):  # the first round warms up and is dropped
        for kind in TEMPORALS:
            model.temporal_embedding, model.temporal_mixer, model.temporal_trajectory, _ = setups[kind]
            params = trainable_parameters(model)
            for p in model.parameters():
                p.requires_grad_(False)
            for p in params.values():
                p.requires_grad_(True)
            opt = torch.optim.AdamW(params.values(), lr=1e-5)
            losses = _Losses(model, (0.0, 1.0), train_text=False)
            t0 = time.perf_counter()
            loss = losses(tokens, token_ids, [""] * args.batch, n_targets, 1.0)[0]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            times[kind].append(time.perf_counter() - t0)
    print(header(f"--temporal variants: new parameters and one cached finetuning step (coca_ViT-B-32, B={args.batch}, "
                 f"T={FRAMES}, captioning loss, {args.repeat} interleaved repeats)"))
    base = statistics.median(times["none"][1:])
    print("| variant | new parameters | median step s | min s | vs none |")
    print("|---|---|---|---|---|")
    for kind in TEMPORALS:
        ts = times[kind][1:]
        med = statistics.median(ts)
        print(f"| {kind} | {setups[kind][3]:,} | {med:.3f} | {min(ts):.3f} | {med / base:.2f}x |")


if __name__ == "__main__":
    main()
