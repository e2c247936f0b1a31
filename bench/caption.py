"""Caption throughput: our KV-cached decoder against an uncached loop and open_clip's generate().

coca_ViT-B-32 (random weights), 4 videos, exactly 30 new tokens (min_len = max_len = 30), greedy and
beam search with 6 beams, fp32 on CPU. The uncached loop re-runs open_clip's full forward every step
(videococa.testing, the oracle the tests compare against). open_clip's own generate() needs
transformers<4.56; its column is skipped with a note when that is not installed.
Run: .venv/bin/python bench/caption.py
"""

from __future__ import annotations

import time
import warnings

import torch

from common import header

import videococa
from videococa.testing import SOT, reference_beam, reference_greedy

B, NEW, BEAMS = 4, 30, 6


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = videococa.load_model("coca_ViT-B-32")
    coca = model.coca
    frames = torch.randn(B, 1, 3, 224, 224)  # one frame: open_clip's generate() takes images
    _, tokens = model.encode_video(frames, return_tokens=True)
    model.generate(video_tokens=tokens[:1], method="greedy", max_len=3, min_len=1)  # warm-up

    rows = {}
    rows["greedy", "ours (KV cache)"], ours_greedy = timed(
        lambda: model.generate(video_tokens=tokens, method="greedy", max_len=NEW, min_len=NEW, return_details=True))
    rows["beam", "ours (KV cache)"], ours_beam = timed(
        lambda: model.generate(video_tokens=tokens, method="beam", num_beams=BEAMS, max_len=NEW, min_len=NEW,
                               return_details=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bf16 = videococa.load_model("coca_ViT-B-32", precision="bf16")
    bf16.load_state_dict(model.state_dict())
    rows["greedy", "ours bf16"], _ = timed(
        lambda: bf16.generate(video_tokens=tokens, method="greedy", max_len=NEW, min_len=NEW))
    rows["beam", "ours bf16"], _ = timed(
        lambda: bf16.generate(video_tokens=tokens, method="beam", num_beams=BEAMS, max_len=NEW, min_len=NEW))
    rows["greedy", "uncached loop"], ref_greedy = timed(
        lambda: [reference_greedy(coca, tokens[i : i + 1], [SOT], NEW, NEW) for i in range(B)])
    rows["beam", "uncached loop"], ref_beam = timed(
        lambda: [reference_beam(coca, tokens[i : i + 1], [SOT], BEAMS, NEW, NEW) for i in range(B)])
    same_greedy = [c.token_ids for c in ours_greedy] == ref_greedy
    same_beam = [c.token_ids for c in ours_beam] == [ids for _, ids in ref_beam]

    note = ""
    try:
        import transformers  # noqa: F401

        with torch.no_grad():
            rows["greedy", "open_clip generate()"], oc = timed(lambda: coca.generate(
                frames[:, 0], generation_type="top_k", top_k=1, seq_len=NEW + 1, min_seq_len=NEW))
            rows["beam", "open_clip generate()"], _ = timed(lambda: coca.generate(
                frames[:, 0], generation_type="beam_search", num_beams=BEAMS, num_beam_groups=1, seq_len=NEW + 1,
                min_seq_len=NEW))
        oc_ids = [row[1 : NEW + 1].tolist() for row in oc]
        same = [next((i for i, (a, b) in enumerate(zip(o, c.token_ids)) if a != b), min(len(o), len(c.token_ids)))
                for o, c in zip(oc_ids, ours_greedy)]
        note = (f"open_clip greedy (top_k=1) and ours agree on the first {min(same)} of {NEW} tokens for every video "
                f"(open_clip forces the end token at its seq_len, so its last position differs by construction)")
    except Exception as exc:  # noqa: BLE001 - transformers missing or too new
        note = (f"open_clip generate() column skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:120]} "
                "(it needs transformers<4.56)")

    print(header(f"caption: coca_ViT-B-32 (random weights), {B} videos, {NEW} new tokens, fp32 CPU"))
    print("| method | path | s total | captions/s | ours faster by |")
    print("|---|---|---|---|---|")
    for (method, path), secs in rows.items():
        base = rows[method, "ours (KV cache)"]
        print(f"| {method} | {path} | {secs:.2f} | {B / secs:.2f} | {secs / base:.1f}x |")
    print()
    for method in ("greedy", "beam"):
        oc = rows.get((method, "open_clip generate()"))
        if oc:
            print(f"{method}: ours fp32 {oc / rows[method, 'ours (KV cache)']:.1f}x, ours bf16 "
                  f"{oc / rows[method, 'ours bf16']:.1f}x faster than open_clip generate()")
    print()
    print(f"greedy tokens identical to the uncached loop: {same_greedy}; beam: {same_beam}")
    print(note)


if __name__ == "__main__":
    main()
