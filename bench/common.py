"""Shared benchmark helpers: timing, FLOP counting and a description of the machine."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import time
from typing import Callable

import torch


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = open("/proc/cpuinfo").read()
        isa = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    except OSError:
        isa = []
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    from videococa.models.precision import cpu_capability, native_bf16

    kind = f"{cpu_capability()}; precision auto = {'bf16' if native_bf16('cpu') else 'fp32'} on CPU"
    return (f"{cpu}, {os.cpu_count()} cores ({', '.join(isa) or 'no bf16 ISA'}; {kind}), {gpu}; "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads")


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def step_args(doc: str):
    """The arguments the step benchmarks share: --batch, --repeat, --device."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return ap.parse_args()


def random_b32(device: str, **kwargs):
    """coca_ViT-B-32 with random weights (step times do not depend on the values), seeded, its warning silenced."""
    import warnings

    import videococa

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return videococa.load_model("coca_ViT-B-32", device=device, **kwargs)


def header(title: str) -> str:
    return (f"## {title}\n\nmachine: {machine()}\ndate: {datetime.date.today().isoformat()}  commit: {commit()}\n")


def timeit(fn: Callable[[], object], *, repeat: int = 5, warmup: int = 1) -> float:
    """Median seconds of `repeat` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call, counted by torch's FlopCounterMode (matmuls, convs, attention).

    nn.MultiheadAttention's inference fast path (`aten._native_multi_head_attention`) is one op the counter does
    not know, so its projections and attention products went uncounted (a third of a ViT-B/32's FLOPs: 5.89 instead
    of 8.72 GFLOP per frame); while counting, that fast path is switched off so the same work is seen op by op.
    """
    from torch.utils.flop_counter import FlopCounterMode

    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    return counter.get_total_flops()


def matmul_peak(dtype: torch.dtype, sizes: tuple[int, ...] = (2048, 4096)) -> float:
    """The best n^3 matmul throughput (GFLOP/s) over `sizes`: the machine's practical peak in `dtype`."""
    return max(matmul_gflops(dtype, n, repeat=3) for n in sizes)


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeat: int = 5) -> float:
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    secs = timeit(lambda: a @ b, repeat=repeat)
    return 2 * n**3 / secs / 1e9
