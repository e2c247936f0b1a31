"""Peak memory of `videococa index --segment 1` against video length: it should not grow with the video.

Each run is its own process (peak RSS from getrusage of the child), side by side in one invocation:
short and long videos, the 64-px bundled model and a 224-px model (coca_ViT-B-32, random weights).
Before the windows were streamed, every window of a file was decoded before any was encoded
(issue 18 measured 5.0 GB for a 2-hour video at --segment 1 with the 64-px model).

Run: .venv/bin/python bench/memory.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from common import header

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "bench"


def video(seconds: int) -> str:
    """A 320x180 h264 file of `seconds` (keyframe every 10 s), written once and cached."""
    path = CACHE / f"mem_{seconds}s.mp4"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        from videococa.testing import write_video

        tmp = path.with_name(path.stem + ".tmp.mp4")
        write_video(tmp, num_frames=25 * seconds, width=320, height=180, fps=25, gop=250,
                    options={"preset": "ultrafast"})
        tmp.rename(path)
    return str(path)


_MEASURE = ("import resource, subprocess, sys\n"
            "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
            "sys.exit(p.stderr) if p.returncode else print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def peak_rss_mb(argv: list[str]) -> float:
    """Peak resident memory (MB) of one process running `argv`, measured by a fresh parent of its own."""
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return int(proc.stdout) / 1024  # ru_maxrss is in KiB on Linux


def main() -> None:
    runs = [("videococa-tiny", 64, [60, 1200]), ("coca_ViT-B-32", 224, [30, 300])]
    print(header("memory: peak RSS of `videococa index VIDEO --segment 1 --frames 8` by video length"))
    print("| model | frame size | video | windows | peak RSS (MB) | ratio to the shortest |")
    print("|---|---|---|---|---|---|")
    for model, size, lengths in runs:
        first = None
        for seconds in lengths:
            path = video(seconds)
            with tempfile.TemporaryDirectory() as tmp:
                argv = [sys.executable, "-m", "videococa", "index", path, "--index", f"{tmp}/idx", "--segment", "1",
                        "--frames", "8", "--model", model, "--json"]
                mb = peak_rss_mb(argv)
            first = first or mb
            print(f"| {model} | {size} px | {seconds} s | {seconds} | {mb:.0f} | {mb / first:.2f} |", flush=True)


if __name__ == "__main__":
    main()
