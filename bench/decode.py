"""Decoding: sampling 8 frames by seeking vs a full sequential decode; end-to-end loading + encoding.

Run: .venv/bin/python bench/decode.py
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import torch

from common import header, timeit

import videococa
from videococa.video import decode_all
from videococa.video.samples import sample_videos

T, B = 8, 4


def samples() -> list[str]:
    return [str(p) for p in sample_videos()]


def long_video() -> str:
    """A 2-minute 640x360 h264 file with a keyframe every 10 s (written once, cached)."""
    path = Path(__file__).resolve().parent.parent / ".cache" / "bench" / "long_120s_gop250.mp4"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        from videococa.testing import write_video

        tmp = path.with_suffix(".tmp.mp4")
        write_video(tmp, num_frames=3000, width=640, height=360, fps=25, gop=250, options={"preset": "ultrafast"})
        tmp.rename(path)
    return str(path)


def main() -> None:
    print(header(f"decode: {T} uniform frames per video vs full sequential decode (PyAV {__import__('av').__version__})"))
    print("| video | size | frames | keyframes | sample 8 (ms) | full decode (ms) | ratio |")
    print("|---|---|---|---|---|---|---|")
    for path in samples() + [long_video()]:
        info = videococa.probe(path)
        import av

        with av.open(path) as c:
            keyframes = sum(e.is_keyframe for e in c.streams.video[0].index_entries)
        t_sample = timeit(lambda: videococa.read_video(path, T), repeat=5)
        t_full = timeit(lambda: sum(1 for _ in decode_all(path)), repeat=3)
        print(f"| {Path(path).name} | {info.width}x{info.height} | {info.num_frames} | {keyframes} | "
              f"{t_sample * 1e3:.0f} | {t_full * 1e3:.0f} | {t_full / t_sample:.1f}x faster |")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = videococa.load_model("coca_ViT-B-32", precision="bf16")
    paths = samples() * 4  # 12 videos
    workers = max(1, min(2, os.cpu_count() or 1))
    frames = torch.stack([videococa.read_video(p, T).frames for p in paths])  # pre-decoded

    def encode_only():
        for chunk in frames.split(B):
            model.encode_video(chunk)

    def end_to_end(w):
        for batch in videococa.VideoLoader(paths, T, batch_size=B, workers=w):
            model.encode_video(batch.frames)

    encode_only()  # warm up
    t_enc = timeit(encode_only, repeat=3, warmup=0)
    t_e2e = timeit(lambda: end_to_end(workers), repeat=3, warmup=0)
    t_e2e0 = timeit(lambda: end_to_end(0), repeat=3, warmup=0)
    n = len(paths)
    print()
    print(f"end to end, coca_ViT-B-32 bf16, {n} videos, batch {B}, {T} frames, {os.cpu_count()} cores:")
    print("| path | videos/s | vs encode-only |")
    print("|---|---|---|")
    print(f"| encode only (pre-decoded tensors) | {n / t_enc:.2f} | 1.00x |")
    print(f"| VideoLoader workers={workers} + encode | {n / t_e2e:.2f} | {t_enc / t_e2e:.2f}x |")
    print(f"| VideoLoader workers=0 + encode (serial) | {n / t_e2e0:.2f} | {t_enc / t_e2e0:.2f}x |")


if __name__ == "__main__":
    import faulthandler

    faulthandler.dump_traceback_later(900, exit=True)  # print every thread's stack if a run hangs
    main()
