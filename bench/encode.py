"""Video encoding throughput: our encode_video (fp32, bf16) against a naive per-frame open_clip loop.

coca_ViT-B-32 with random weights (the speed does not depend on the values), T=8, batch 4.
Also: the machine's matmul throughput and the share of it the encoder reaches, and the
cost of the flattened attentional pooling relative to the frame encoder.
Run: .venv/bin/python bench/encode.py
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from common import count_flops, header, matmul_gflops, timeit

import videococa

B, T = 4, 8


def main() -> None:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp32 = videococa.load_model("coca_ViT-B-32")
        bf16 = videococa.load_model("coca_ViT-B-32", precision="bf16")
    bf16.load_state_dict(fp32.state_dict())  # same weights (cast to bf16 where bf16 keeps them)
    frames = torch.randn(B, T, 3, 224, 224)
    coca = fp32.coca

    def naive():  # what a user would write with open_clip alone
        with torch.no_grad():
            embs = torch.stack([coca.encode_image(frames[:, t], normalize=True) for t in range(T)], 1)
            return F.normalize(embs.mean(1), dim=-1)

    rows = []
    t_fp32 = timeit(lambda: fp32.encode_video(frames), repeat=5)
    t_bf16 = timeit(lambda: bf16.encode_video(frames), repeat=5)
    t_naive = timeit(naive, repeat=5)
    rows.append(("encode_video attentional fp32", t_fp32))
    rows.append(("encode_video attentional bf16", t_bf16))
    rows.append(("naive open_clip loop + mean, fp32", t_naive))

    tokens = fp32.encode_frames(frames)
    t_enc = timeit(lambda: fp32.encode_frames(frames), repeat=5)
    t_pool = timeit(lambda: fp32.pool_frame_tokens(tokens), repeat=5)
    enc_flops = count_flops(lambda: fp32.encode_frames(frames))
    pool_flops = count_flops(lambda: fp32.pool_frame_tokens(tokens))
    mm32, mm16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    tokens16 = bf16.encode_frames(frames)
    t_enc16 = timeit(lambda: bf16.encode_frames(frames), repeat=5)
    t_pool16 = timeit(lambda: bf16.pool_frame_tokens(tokens16), repeat=5)

    print(header(f"encode: coca_ViT-B-32 (random weights), B={B}, T={T}, 224px, CPU"))
    print("| path | s / batch | videos/s | vs fp32 |")
    print("|---|---|---|---|")
    for name, secs in rows:
        print(f"| {name} | {secs:.3f} | {B / secs:.2f} | {t_fp32 / secs:.2f}x |")
    print()
    print(f"encoder FLOPs per video: {enc_flops / B / 1e9:.2f} GFLOP ({T} frames); pooling: {pool_flops / B / 1e9:.3f} GFLOP")
    print(f"matmul peak (2048^3): fp32 {mm32:.0f} GFLOP/s, bf16 {mm16:.0f} GFLOP/s")
    print(f"encoder achieved: fp32 {enc_flops / t_enc / 1e9:.0f} GFLOP/s = {enc_flops / t_enc / 1e9 / mm32:.0%} of fp32 peak; "
          f"bf16 {enc_flops / t_enc16 / 1e9:.0f} GFLOP/s = {enc_flops / t_enc16 / 1e9 / mm16:.0%} of bf16 peak")
    print(f"pooling overhead: fp32 {t_pool / t_enc:.1%} of encoder time; bf16 {t_pool16 / t_enc16:.1%}")
    print(f"bf16 speed-up over fp32 (encode_video): {t_fp32 / t_bf16:.2f}x")


if __name__ == "__main__":
    main()
