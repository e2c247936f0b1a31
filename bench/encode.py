"""Video encoding throughput: our encode_video (fp32, bf16) against a naive per-frame open_clip loop, and the frame
encoder's share of the machine's bf16 matmul peak (measured in the same run).

coca_ViT-B-32 with random weights (the speed does not depend on the values), T=8, batch 4 (= 32 frames).
Issue 23 item 4 target: the frame encoder at >= 55% of the bf16 matmul peak for coca_ViT-B-32 at 32 frames;
coca_ViT-L-14 reported too. The levers tried are timed side by side (`levers`).
Run: .venv/bin/python bench/encode.py [--compile]   (--compile adds torch.compile of the frame encoder)
"""

from __future__ import annotations

import copy
import sys
import time
import warnings

import torch
import torch.nn.functional as F

from common import count_flops, header, matmul_peak, timeit

import videococa

B, T = 4, 8
TARGET = 0.55


def load(name: str, precision: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return videococa.load_model(name, precision=precision)


def video_rows(fp32, bf16, frames) -> None:
    coca = fp32.coca

    def naive():  # what a user would write with open_clip alone
        with torch.no_grad():
            embs = torch.stack([coca.encode_image(frames[:, t], normalize=True) for t in range(T)], 1)
            return F.normalize(embs.mean(1), dim=-1)

    t_fp32 = timeit(lambda: fp32.encode_video(frames), repeat=5)
    rows = [("encode_video attentional fp32", t_fp32),
            ("encode_video attentional bf16", timeit(lambda: bf16.encode_video(frames), repeat=5)),
            ("naive open_clip loop + mean, fp32", timeit(naive, repeat=5))]
    print("| path | s / batch | videos/s | vs fp32 |")
    print("|---|---|---|---|")
    for name, secs in rows:
        print(f"| {name} | {secs:.3f} | {B / secs:.2f} | {t_fp32 / secs:.2f}x |")
    tokens = fp32.encode_frames(frames)
    t_enc, t_pool = timeit(lambda: fp32.encode_frames(frames)), timeit(lambda: fp32.pool_frame_tokens(tokens))
    tokens16 = bf16.encode_frames(frames)
    t_enc16, t_pool16 = timeit(lambda: bf16.encode_frames(frames)), timeit(lambda: bf16.pool_frame_tokens(tokens16))
    print(f"\npooling overhead: fp32 {t_pool / t_enc:.1%} of encoder time; bf16 {t_pool16 / t_enc16:.1%}")
    print(f"bf16 speed-up over fp32 (encode_video): {t_fp32 / rows[1][1]:.2f}x")


def pure_bf16(model):
    """The frame encoder with every weight in bf16 and no autocast (LayerNormFp32 keeps fp32 parameters)."""
    vis = copy.deepcopy(model.coca.visual).to(torch.bfloat16)
    for m in vis.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.float()

    def run(frames):
        with torch.inference_mode():
            return vis.transformer(vis._embeds(frames.flatten(0, 1).to(torch.bfloat16)))

    return run


def openclip_forward(model):
    """The frame encoder as before this change: open_clip's own `visual.transformer(x)`, whose blocks run
    nn.MultiheadAttention's inference fast path (softmax and two batched matmuls apart)."""
    vis = model.coca.visual

    def run(frames):
        with torch.inference_mode(), model.autocast():
            return vis.transformer(vis._embeds(frames.flatten(0, 1)))  # (B*T, N, W)

    return run


def levers(bf16, frames, flops: int, peak: float, compile_too: bool) -> None:
    """Each candidate lever for the bf16 frame encoder, timed on the same 32 frames."""
    n = frames.shape[0] * frames.shape[1]
    pure, before = pure_bf16(bf16), openclip_forward(bf16)
    rows = [("as shipped: bf16 weights, autocast, fused SDPA blocks (run_transformer), frame batch 64",
             timeit(lambda: bf16.encode_frames(frames), repeat=5)),
            ("before: open_clip's block forward (MHA inference fast path)", timeit(lambda: before(frames), repeat=5))]
    torch.backends.mha.set_fastpath_enabled(False)
    rows.append(("open_clip's forward with the MHA fast path off (F.multi_head_attention_forward)",
                 timeit(lambda: before(frames), repeat=3)))
    torch.backends.mha.set_fastpath_enabled(True)
    rows.append(("all-bf16 module, no autocast (fewer casts?), open_clip forward", timeit(lambda: pure(frames), repeat=5)))
    for fb in (8, 16):
        bf16.frame_batch_size = fb
        rows.append((f"frame batch {fb} (as shipped otherwise)", timeit(lambda: bf16.encode_frames(frames), repeat=5)))
    bf16.frame_batch_size = 64
    if compile_too:
        vis = bf16.coca.visual
        t0 = time.perf_counter()
        comp = torch.compile(vis.transformer)

        def compiled():
            with torch.inference_mode(), bf16.autocast():
                return comp(vis._embeds(frames.flatten(0, 1)))

        compiled()
        print(f"torch.compile: first call (compilation) {time.perf_counter() - t0:.1f} s")
        rows.append(("torch.compile(visual.transformer) (inductor), after compiling", timeit(compiled, repeat=3)))
    print(f"\nlevers, coca_ViT-B-32 bf16 frame encoder, {n} frames ({flops / n / 1e9:.2f} GFLOP per frame):")
    print("| variant | ms / 32 frames | GFLOP/s | % of bf16 peak |")
    print("|---|---|---|---|")
    for name, secs in rows:
        print(f"| {name} | {secs * 1e3:.0f} | {flops / secs / 1e9:.0f} | {flops / secs / 1e9 / peak:.0%} |")


def share_of_peak(name: str, model, frames, peak: float, variants: bool = False) -> float:
    flops = count_flops(lambda: model.encode_frames(frames))
    secs = timeit(lambda: model.encode_frames(frames), repeat=3)
    share = flops / secs / 1e9 / peak
    n = frames.shape[0] * frames.shape[1]
    print(f"| {name} | {n} | {flops / n / 1e9:.2f} | {secs * 1e3:.0f} | {flops / secs / 1e9:.0f} | {share:.0%} |")
    if variants:  # before this change, in the same run
        before = openclip_forward(model)
        s2 = timeit(lambda: before(frames), repeat=3)
        print(f"| {name}, before: open_clip's block forward (MHA fast path) | {n} | {flops / n / 1e9:.2f} | "
              f"{s2 * 1e3:.0f} | {flops / s2 / 1e9:.0f} | {flops / s2 / 1e9 / peak:.0%} |")
    return share


def main() -> None:
    torch.manual_seed(0)
    fp32, bf16 = load("coca_ViT-B-32", "fp32"), load("coca_ViT-B-32", "bf16")
    bf16.load_state_dict(fp32.state_dict())  # same weights (cast to bf16 where bf16 keeps them)
    frames = torch.randn(B, T, 3, 224, 224)
    print(header(f"encode: coca_ViT-B-32 (random weights), B={B}, T={T}, 224px, CPU"))
    video_rows(fp32, bf16, frames)
    mm32, mm16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    print(f"\nmatmul peak (best of 2048^3 and 4096^3, this run): fp32 {mm32:.0f} GFLOP/s, bf16 {mm16:.0f} GFLOP/s")
    print(f"\nframe encoder (encode_frames) at {B * T} frames, bf16, FLOPs counted op by op (see common.count_flops):")
    print("| model | frames | GFLOP / frame | ms | GFLOP/s | % of bf16 peak |")
    print("|---|---|---|---|---|---|")
    share = share_of_peak("coca_ViT-B-32", bf16, frames, mm16, variants=True)
    enc32, t32 = count_flops(lambda: fp32.encode_frames(frames)), timeit(lambda: fp32.encode_frames(frames), repeat=3)
    print(f"| coca_ViT-B-32 in fp32 | {B * T} | {enc32 / B / T / 1e9:.2f} | {t32 * 1e3:.0f} | {enc32 / t32 / 1e9:.0f} "
          f"| {enc32 / t32 / 1e9 / mm32:.0%} of the fp32 peak |")
    del fp32
    large = load("coca_ViT-L-14", "bf16")
    share_of_peak("coca_ViT-L-14", large, torch.randn(B, T, 3, 224, 224), mm16, variants=True)
    del large
    print(f"\ntarget: coca_ViT-B-32 frame encoder >= {TARGET:.0%} of the bf16 matmul peak: "
          f"{'met' if share >= TARGET else 'not met'} ({share:.0%})")
    levers(bf16, frames, count_flops(lambda: bf16.encode_frames(frames)), mm16, "--compile" in sys.argv)


if __name__ == "__main__":
    main()
