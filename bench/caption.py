"""Caption speed: the decoder against the bound set by streaming its weights, and captioning against encoding.

coca_ViT-B-32 with random weights (speed does not depend on the values), CPU, one process run:

1. bound: one pass that streams every weight a decoding step reads (text tower, decoder self- and
   cross-attention, MLPs, the vocabulary projection; not the embedding table, which is looked up), as a GEMV
   per matrix at batch 1, in each precision and with each kernel the decoder can use (bf16: `F.linear` and
   oneDNN's packed layout); the bound is the fastest.
2. greedy step time (one new token, position 10) at batch 1, 8, 32 in fp32 and bf16, now and before this
   change (the decoder of `--before`, loaded from git in the same run): step / bound at batch 1 (target
   <= 1.3x), bf16 / fp32 per batch (target: bf16 never slower).
3. beam search, 6 beams, one video: time per step against a greedy step over 6 videos (both whole 20-token
   runs divided by 20; target <= 1.5x).
4. captions/s at batch 1, 8, 32 (greedy, exactly 20 tokens) against embeddings/s encoding the same segments
   (8 frames each), bf16: target: captioning a segment costs no more than encoding it.
5. parity: greedy and beam token-identical to the uncached reference (fp32), and how bf16 tokens compare.
`--reference` adds the older table: our decoder against the uncached loop and open_clip's generate().
Run: .venv/bin/python bench/caption.py [--before REV] [--reference]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
import warnings

import torch
import torch.nn.functional as F

from common import header, timeit

import videococa
from videococa.models import decoding
from videococa.testing import SOT, reference_beam, reference_greedy

BEFORE = "c54c924"  # the branch point of issue 23's decoder work
BATCHES = (1, 8, 32)
NEW, BEAMS, FRAMES = 20, 6, 8


def load_before(rev: str):
    """The decoding module as it was at `rev`, imported next to today's (its relative imports still resolve)."""
    src = subprocess.run(["git", "show", f"{rev}:src/videococa/models/decoding.py"], capture_output=True, text=True,
                         check=True).stdout
    path = tempfile.NamedTemporaryFile("w", suffix=".py", delete=False)
    path.write(src)
    path.close()
    spec = importlib.util.spec_from_file_location("videococa.models._decoding_before", path.name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def streamed_weights(coca) -> list[torch.Tensor]:
    """Every (out, in) matrix one decoding step multiplies by (cross-attention keys/values are made once)."""
    mats = []
    for block in [*coca.text.transformer.resblocks, *coca.text_decoder.resblocks, *coca.text_decoder.cross_attn]:
        e = block.attn.embed_dim
        qkv = block.attn.in_proj_weight[:e] if hasattr(block, "ln_1_kv") else block.attn.in_proj_weight
        mats += [qkv, block.attn.out_proj.weight, block.mlp.c_fc.weight, block.mlp.c_proj.weight]
    mats.append(coca.text_decoder.text_projection.t())
    return [m.detach().contiguous() for m in mats]


def bounds(coca) -> dict[str, tuple[float, float]]:
    """(seconds, bytes) of one GEMV pass over the streamed weights, per precision and kernel."""
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        mats = [m.to(dtype) for m in streamed_weights(coca)]
        xs = [torch.randn(1, m.shape[1], dtype=dtype) for m in mats]
        size = sum(m.numel() * m.element_size() for m in mats)
        out[f"{name} F.linear"] = timeit(lambda: [F.linear(x, m) for x, m in zip(xs, mats)], repeat=7), size
        packed = [decoding._pack(m) for m in mats]
        if all(p is not None for p in packed):
            op = torch.ops.mkldnn._linear_pointwise
            out[f"{name} oneDNN packed"] = timeit(lambda: [op(x, p, None, "none", [], "") for x, p in zip(xs, packed)],
                                                  repeat=7), size
        del mats, packed
    return out


def step_time(module, coca, tokens: torch.Tensor, precision: str) -> float:
    """Median seconds of one greedy step (one new token per video at position 10), `module`'s decoder."""
    b = tokens.shape[0]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.inference_mode(), autocast:
        state = module.DecodeState(coca, tokens, 1, 40)
        state.forward(torch.full((b, 10), SOT))
        nxt = torch.full((b, 1), 320)

        def step():
            state.pos = 10
            state.forward(nxt)

        return timeit(step, repeat=9, warmup=2)


def met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def report_bound(bound: dict) -> tuple[float, float]:
    print("| weights streamed per step (batch-1 GEMV over each matrix) | MB | ms | GB/s |")
    print("|---|---|---|---|")
    for name, (secs, size) in bound.items():
        print(f"| {name} | {size / 1e6:.0f} | {secs * 1e3:.1f} | {size / secs / 1e9:.1f} |")
    best = {p: min(s for n, (s, _) in bound.items() if n.startswith(p)) for p in ("fp32", "bf16")}
    print(f"\nbound = the fastest pass: fp32 {best['fp32'] * 1e3:.1f} ms, bf16 {best['bf16'] * 1e3:.1f} ms\n")
    return best["fp32"], best["bf16"]


def report_steps(coca, tokens, before, best: dict) -> dict:
    steps = {}
    for label, module in (("before", before), ("now", decoding)):
        for b in BATCHES:
            for p in ("fp32", "bf16"):
                steps[label, b, p] = step_time(module, coca, tokens[:b], p)
    print("| greedy step | batch | fp32 ms | bf16 ms | bf16 / fp32 | fp32 / bound | bf16 / bound |")
    print("|---|---|---|---|---|---|---|")
    for (label, b, p), secs in steps.items():
        if p == "fp32":
            bf = steps[label, b, "bf16"]
            print(f"| {label} | {b} | {secs * 1e3:.1f} | {bf * 1e3:.1f} | {bf / secs:.2f}x | {secs / best['fp32']:.2f}x "
                  f"| {bf / best['bf16']:.2f}x |")
    print()
    for p in ("fp32", "bf16"):
        r = steps["now", 1, p] / best[p]
        print(f"target greedy step at batch 1 <= 1.3x the bound, {p}: {r:.2f}x {met(r <= 1.3)} "
              f"(before: {steps['before', 1, p] / best[p]:.2f}x)")
    worst = max(steps["now", b, "bf16"] / steps["now", b, "fp32"] for b in BATCHES)
    print(f"target bf16 never slower than fp32 (batch {', '.join(map(str, BATCHES))}): worst bf16 / fp32 = "
          f"{worst:.2f}x {met(worst <= 1.0)}")
    return steps


def report_beam(model, tokens) -> None:
    for p, m in (("fp32", model["fp32"]), ("bf16", model["bf16"])):
        kw = dict(max_len=NEW, min_len=NEW)
        m.generate(video_tokens=tokens[:1], method="beam", num_beams=BEAMS, max_len=3, min_len=3)  # warm-up
        beam = timeit(lambda: m.generate(video_tokens=tokens[:1], method="beam", num_beams=BEAMS, **kw), repeat=3)
        greedy = timeit(lambda: m.generate(video_tokens=tokens[:BEAMS], method="greedy", **kw), repeat=3)
        r = beam / greedy
        print(f"target beam ({BEAMS} beams, 1 video) per step <= 1.5x a greedy step over {BEAMS} videos, {p}: "
              f"{beam / NEW * 1e3:.1f} ms vs {greedy / NEW * 1e3:.1f} ms = {r:.2f}x {met(r <= 1.5)}")


def caption_before(before, model, tokens: torch.Tensor) -> list[list[int]]:
    """Greedy captions of exactly NEW tokens with the decoder of `--before` (as VideoCoCa.generate called it)."""
    cfg = decoding.GenerationConfig(method="greedy", max_len=NEW, min_len=NEW)
    prefix = torch.full((tokens.shape[0], 1), SOT)
    with torch.inference_mode(), model.autocast():
        out = before.generate_ids(model.coca, tokens, prefix, eot=model.eot_token_id, config=cfg)
    return [ids for ids, _ in out]


def report_throughput(model, before) -> None:
    """Item 2: captions/s against embeddings/s for the same segments, bf16."""
    m = model["bf16"]
    print(f"\n| bf16, {FRAMES}-frame segments | batch | embeddings/s | captions/s now | captions/s before | "
          "caption / encode per segment (now) |")
    print("|---|---|---|---|---|---|")
    worst = 0.0
    for b in BATCHES:
        frames = torch.randn(b, FRAMES, 3, 224, 224)
        enc = timeit(lambda: m.encode_video(frames, return_tokens=True), repeat=3)
        _, tokens = m.encode_video(frames, return_tokens=True)
        cap = timeit(lambda: m.generate(video_tokens=tokens, method="greedy", max_len=NEW, min_len=NEW), repeat=3)
        old = timeit(lambda: caption_before(before, m, tokens), repeat=3)
        worst = max(worst, cap / enc)
        print(f"| | {b} | {b / enc:.2f} | {b / cap:.2f} | {b / old:.2f} | {cap / enc:.2f}x |")
    print(f"\ntarget captioning a segment ({NEW} tokens, greedy) costs no more than encoding it, bf16, at batch "
          f"{', '.join(map(str, BATCHES))}: worst caption / encode = {worst:.2f}x {met(worst <= 1.0)}")
    print("(indexing captions each batch of encoded clips together: up to 16 windows of 8 frames with --segment, "
          "else 4 files; tasks.batch.encode_clips)")


def report_parity(model, before, tokens) -> None:
    fp32, bf16 = model["fp32"], model["bf16"]
    coca = fp32.coca
    out = fp32.generate(video_tokens=tokens[:2], method="greedy", max_len=NEW, min_len=5, return_details=True)
    same_greedy = all(o.token_ids == reference_greedy(coca, tokens[i : i + 1], [SOT], NEW, 5) for i, o in enumerate(out))
    beams = fp32.generate(video_tokens=tokens[:1], method="beam", num_beams=3, max_len=8, min_len=2, return_details=True)
    _, ref = reference_beam(coca, tokens[:1], [SOT], 3, 8, 2)
    same_beam = beams[0].token_ids == [t for t in ref if t != 49407]
    print(f"\nparity, fp32: greedy ({NEW} tokens, 2 videos) token-identical to the uncached reference: {same_greedy}; "
          f"beam (3 beams, 8 tokens): {same_beam}")
    b = tokens[:8]
    now = [c.token_ids for c in bf16.generate(video_tokens=b, method="greedy", max_len=NEW, min_len=NEW,
                                              return_details=True)]
    old = caption_before(before, bf16, b)
    f32 = [c.token_ids for c in fp32.generate(video_tokens=b, method="greedy", max_len=NEW, min_len=NEW,
                                              return_details=True)]
    agree = lambda x, y: sum(next((i for i, (p, q) in enumerate(zip(u, v)) if p != q), len(u)) for u, v in zip(x, y))
    print(f"bf16 greedy, 8 videos x {NEW} tokens: {agree(now, old)} / {8 * NEW} tokens before the first difference "
          f"from the bf16 decoder before (autocast); {agree(now, f32)} / {8 * NEW} from fp32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE, help="git revision whose decoder is the 'before' row")
    parser.add_argument("--reference", action="store_true", help="also the uncached loop and open_clip generate()")
    args = parser.parse_args()
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = {p: videococa.load_model("coca_ViT-B-32", precision=p) for p in ("fp32", "bf16")}
    model["bf16"].load_state_dict(model["fp32"].state_dict())
    coca = model["fp32"].coca
    before = load_before(args.before)
    tokens = torch.randn(32, 255, coca.text_decoder.width)  # generative video tokens (B, Q-1, E)
    print(header(f"caption: coca_ViT-B-32 (random weights), greedy and beam, fp32 and bf16, CPU; before = "
                 f"{args.before}"))
    best = dict(zip(("fp32", "bf16"), report_bound(bounds(coca))))
    report_steps(coca, tokens, before, best)
    report_beam(model, tokens)
    report_throughput(model, before)
    report_parity(model, before, tokens)
    if args.reference:
        reference_table(model["fp32"], model["bf16"])


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def reference_table(fp32, bf16, b: int = 4, new: int = 30) -> None:
    """Our decoder against the uncached loop and open_clip's generate() (needs transformers<4.56)."""
    coca = fp32.coca
    frames = torch.randn(b, 1, 3, 224, 224)  # one frame: open_clip's generate() takes images
    _, tokens = fp32.encode_video(frames, return_tokens=True)
    kw = dict(max_len=new, min_len=new)
    rows = {}
    for name, m in (("ours (KV cache)", fp32), ("ours bf16", bf16)):
        rows["greedy", name], _ = timed(lambda: m.generate(video_tokens=tokens, method="greedy", **kw))
        rows["beam", name], _ = timed(lambda: m.generate(video_tokens=tokens, method="beam", num_beams=BEAMS, **kw))
    rows["greedy", "uncached loop"], _ = timed(
        lambda: [reference_greedy(coca, tokens[i : i + 1], [SOT], new, new) for i in range(b)])
    rows["beam", "uncached loop"], _ = timed(
        lambda: [reference_beam(coca, tokens[i : i + 1], [SOT], BEAMS, new, new) for i in range(b)])
    try:
        import transformers  # noqa: F401

        with torch.no_grad():
            rows["greedy", "open_clip generate()"], _ = timed(lambda: coca.generate(
                frames[:, 0], generation_type="top_k", top_k=1, seq_len=new + 1, min_seq_len=new))
            rows["beam", "open_clip generate()"], _ = timed(lambda: coca.generate(
                frames[:, 0], generation_type="beam_search", num_beams=BEAMS, num_beam_groups=1, seq_len=new + 1,
                min_seq_len=new))
    except Exception as exc:  # noqa: BLE001 - transformers missing or too new
        print(f"open_clip generate() skipped: {type(exc).__name__}: {str(exc).splitlines()[0][:120]} "
              "(it needs transformers<4.56)")
    print(f"\n{b} videos, {new} new tokens, whole runs:\n")
    print("| method | path | s total | captions/s | ours fp32 faster by |")
    print("|---|---|---|---|---|")
    for (method, path), secs in rows.items():
        print(f"| {method} | {path} | {secs:.2f} | {b / secs:.2f} | {secs / rows[method, 'ours (KV cache)']:.1f}x |")


if __name__ == "__main__":
    main()
