"""Finetuning step time: cached frozen features against the same step with the frozen encoder in the loop.

coca_ViT-B-32 (random weights: the time does not depend on the values), T=8 frames of 224 px per clip, the
same batch of synthetic clips and captions, the same trainable parameters (attn_pool, ln_post, text decoder),
captioning loss, AdamW. One optimizer step each:
  cached         tokens read from a real feature cache on disk (fp16 shards, checksums verified);
  encoder        frames already decoded and in memory, the frozen encoder runs on B*T frames (no grad);
  decode+encoder the videos are decoded and sampled each step as well (what training without a cache does).
The three are timed in one process, interleaved, and reported as ratios to the cached step.
Run: .venv/bin/python bench/finetune.py [--batch 4] [--repeat 5] [--device cpu|cuda]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from common import count_flops, header, random_b32, step_args

import videococa
from videococa.synthetic.benchmark import load_benchmark, make_benchmark
from videococa.train import FeatureCache, cache_features, clip_key
from videococa.train.finetune import _Losses, trainable_parameters

FRAMES = 8


def main() -> None:
    args = step_args(__doc__)
    model = random_b32(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    root = make_benchmark(tmp / "videos", num_videos=args.batch, seed=3, num_frames=16, size=224)
    videos, _ = load_benchmark(root)
    paths = [v.path for v in videos]
    texts = [v.captions[0] for v in videos]
    cache_features(model, [(p, None, None) for p in paths], tmp / "fc", num_frames=FRAMES, batch_size=args.batch)
    cache = FeatureCache(tmp / "fc", model, FRAMES)
    info = model.info

    def read_all() -> torch.Tensor:  # (B, T, 3, H, W)
        return torch.stack([videococa.read_video(p, FRAMES, size=info.image_size, mean=info.image_mean,
                                                 std=info.image_std).frames for p in paths])

    frames_in_memory = read_all()

    params = trainable_parameters(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(list(params.values()), lr=1e-5)
    losses = _Losses(model, (0.0, 1.0), train_text=False)
    tok = model.tokenize(texts).to(model.device)
    n_tok = int((tok[:, 1:] != 0).sum())
    keys = [clip_key(p) for p in paths]
    model.train()

    def step(tokens: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss = losses(tokens, tok, keys, n_tok, 1.0)[0]
        loss.backward()
        opt.step()

    def cached():
        step(torch.stack([cache.get(k) for k in keys]).to(model.device))  # (B, T, N, W)

    def encoder():
        step(model.encode_frames(frames_in_memory).clone())  # frozen encoder on B*T frames

    def decode_encoder():
        step(model.encode_frames(read_all()).clone())

    runs = {"cached": cached, "encoder": encoder, "decode+encoder": decode_encoder}
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeat):  # interleaved, so machine noise hits all three alike
        for name, fn in runs.items():
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t)
    flops_cached = count_flops(cached)
    flops_encoder = count_flops(encoder)

    print(header(f"finetune step: cached features vs encoder in the loop (coca_ViT-B-32, T={FRAMES}, "
                 f"batch {args.batch}, {args.device})"))
    base = statistics.median(times["cached"])
    print("| step | median s | min s | GFLOP | slower than cached |")
    print("|---|---|---|---|---|")
    for name in runs:
        med = statistics.median(times[name])
        fl = {"cached": flops_cached, "encoder": flops_encoder}.get(name)
        print(f"| {name} | {med:.3f} | {min(times[name]):.3f} | {'-' if fl is None else f'{fl / 1e9:.0f}'} "
              f"| {med / base:.1f}x |")
    print(f"\nrepeats: {args.repeat}, interleaved; FLOPs by torch's FlopCounterMode (forward + backward)")


if __name__ == "__main__":
    main()
