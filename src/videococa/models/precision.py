"""Which precision pays on this hardware: bf16 only where the device multiplies bf16 natively.

On CPUs, native bf16 matrix multiply means AMX (Intel Sapphire Rapids and later) or AVX512-BF16; elsewhere
PyTorch emulates it, and it is many times slower than fp32 (measured on an AVX2-only AMD EPYC: a 2048^2
matmul at 0.3 GFLOP/s in bf16 against 125 GFLOP/s in fp32; `encode_video` of 8 frames 4.32 s vs 0.51 s).
`precision="auto"` (the default) therefore picks bf16 on GPUs that support it and on CPUs with AMX or
AVX512-BF16, and fp32 elsewhere.
"""

from __future__ import annotations

import functools
import os
import time
import warnings

import torch

AUTO = "auto"
PRECISION_CHOICES: tuple[str, ...] = ("auto", "fp32", "bf16")
ENV = "VIDEOCOCA_PRECISION"
"""Environment variable that overrides what 'auto' picks (fp32 or bf16); the test suite sets fp32."""
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""/proc/cpuinfo flags of native bf16 matrix multiply on x86 CPUs."""


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_capability() -> str:
    """A short description of the CPU's vector units: 'AMX', 'AVX512-BF16', 'AVX512', 'AVX2' or what torch says."""
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX512-BF16"
    return str(torch.backends.cpu.get_cpu_capability())


def native_bf16(device: torch.device | str) -> bool:
    """True if `device` multiplies bf16 natively (a CUDA GPU with bf16 support, or an x86 CPU with AMX/AVX512-BF16)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return any(f in cpu_flags() for f in CPU_BF16_FLAGS)
    return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """'fp32' or 'bf16': `precision` itself, or for 'auto' the one that pays on `device`."""
    if precision == AUTO:
        forced = os.environ.get(ENV, "").strip().lower()
        if forced in ("fp32", "bf16"):
            precision = forced
        else:
            return "bf16" if native_bf16(device) else "fp32"
    if precision == "bf16" and torch.device(device).type == "cpu" and not native_bf16(device):
        warnings.warn(bf16_cost_message(), stacklevel=3)
    return precision


@functools.lru_cache(maxsize=1)
def bf16_slowdown(n: int = 512, repeat: int = 3) -> float:
    """How many times slower a bf16 n x n matmul runs than fp32 on this CPU (best of `repeat`)."""
    a, b = torch.randn(n, n), torch.randn(n, n)

    def best(x, y) -> float:
        x @ y
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            x @ y
            times.append(time.perf_counter() - t)
        return min(times)

    return best(a.bfloat16(), b.bfloat16()) / max(best(a, b), 1e-9)


def bf16_cost_message() -> str:
    return (f"precision bf16 on a CPU without native bf16 ({cpu_capability()}; no AMX or AVX512-BF16): a bf16 "
            f"matmul measured {bf16_slowdown():.1f}x the time of fp32 here. Use precision 'auto' or 'fp32'.")
