"""`videococa eval`: a benchmark's annotations + the user's videos -> metrics, with the protocol recorded.

Video embeddings (and, for captioning and QA, the decoder tokens) are cached per model fingerprint,
frames, pooling and the exact list of clips, in $VIDEOCOCA_CACHE/eval, so re-running with other
prompts, templates or decoding settings costs no re-encoding. Moment retrieval (eval/moments.py) encodes
its unit windows on every run: they are not cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..cache import cache_root
from ..files import load_tensors, save_tensors_atomic
from ..data.readers import Dataset, Item
from ..deprecation import renamed_keywords
from ..data.registry import REGISTRY, TASKS, DatasetRequestError, load_datasets, read_synthetic  # noqa: F401
from ..models.decoding import GenerationConfig
from ..models.videococa import VideoCoCa
from ..synthetic.world import CLASS_TEMPLATES
from ..text import QA_TEMPLATE
from ..tasks.classify import ensemble_text_embeddings
from ..tasks.clipkeys import ClipKeyEncoder, encode_clip_keys
from ..tasks.labels import BUNDLED_LABELS, load_labels, load_templates
from . import metrics as M
from .moments import MOMENT_NMS, MOMENT_SCALES, MOMENT_STRIDE, MOMENT_UNIT, rank_moments

EvalError = DatasetRequestError
"""An evaluation that cannot run as asked (dataset, task, split or annotation files)."""

CAPTION_DECODING = GenerationConfig(method="beam", num_beams=3, max_len=20, min_len=2)
"""How captioning benchmarks decode unless told otherwise (3 beams, up to 20 new tokens)."""


# --------------------------------------------------------------------------- encoding with a cache
@renamed_keywords(frames="num_frames", tokens="return_tokens")
def encode_items(model: VideoCoCa, items: Sequence[Item], *, num_frames: int, pooling: str, return_tokens: bool,
                 batch_size: int = 8, workers: int = 2, progress: bool = False, cache: bool = True,
                 frame_tokens: Callable[[tuple], torch.Tensor | None] | None = None,
                 encode: ClipKeyEncoder = encode_clip_keys,
                 ) -> tuple[torch.Tensor, torch.Tensor | None, list[int], list[tuple[str, str]]]:
    """(embeddings (U, E), video tokens (U, Q-1, E) or None, item -> row, unreadable (path, reason)) over unique
    clips.

    `frame_tokens((path, start, end))` may return a clip's stored encoder tokens (T, N, W) (a finetuning
    feature cache); such clips are pooled from them without decoding or encoding (attentional pooling only).
    `encode`: where the other clips are read and encoded (`tasks.clipkeys`): this process's threads by default, or
    a backend's `encode_clip_keys` (`videococa.backends`: a Ray cluster's), with the same results.
    """
    clips: dict[tuple, int] = {}
    rows = [clips.setdefault((it.path, it.start, it.end), len(clips)) for it in items]
    keys = list(clips)
    path = _cache_path(model, keys, num_frames, pooling, return_tokens)
    if cache and (hit := _read_cache(path)) is not None:
        return hit[0], hit[1], rows, hit[2]
    out = _Encodings(len(keys), model.info.embed_dim)
    stored: dict[int, torch.Tensor] = {}
    if frame_tokens is not None and pooling == "attentional":
        cache = False  # results from stored tokens are not written to the evaluation cache
        stored = {i: t for i, k in enumerate(keys) for t in [frame_tokens(k)] if t is not None}
    ordered = sorted(stored)
    for start in range(0, len(ordered), batch_size):
        part = ordered[start : start + batch_size]
        e, t = model.pool_frame_tokens(torch.stack([stored[i] for i in part]))  # (b, T, N, W) -> (b, E), (b, Q-1, E)
        out.put(part, e, t if return_tokens else None)
    to_encode = [i for i in range(len(keys)) if i not in stored]
    unreadable = _encode_clips(model, keys, to_encode, out, num_frames=num_frames, pooling=pooling,
                               return_tokens=return_tokens, batch_size=batch_size, workers=workers, progress=progress,
                               encode=encode)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        d = {"embeddings": out.emb} if out.video_tokens is None else {"embeddings": out.emb, "tokens": out.video_tokens}
        save_tensors_atomic(path, d, metadata={"unreadable": json.dumps(unreadable)})
    return out.emb, out.video_tokens, rows, unreadable


def _cache_path(model: VideoCoCa, keys: list[tuple], num_frames: int, pooling: str, return_tokens: bool) -> Path:
    """Where the encodings of these clips (as the files are now) with these settings are cached."""
    stamp = [(p, s, e, st.st_size, st.st_mtime_ns) for p, s, e in keys for st in [os.stat(p)]]
    key = json.dumps([model.fingerprint(), num_frames, pooling, return_tokens, stamp])
    h = hashlib.sha256(key.encode()).hexdigest()[:24]
    return cache_root() / "eval" / f"{model.info.name}-{h}.safetensors"


def _read_cache(path: Path) -> tuple[torch.Tensor, torch.Tensor | None, list[tuple[str, str]]] | None:
    """(embeddings, video tokens or None, unreadable) from an evaluation cache file; None if missing or damaged."""
    if not path.is_file():
        return None
    try:
        d, meta = load_tensors(path)
        return d["embeddings"], d.get("tokens"), [tuple(b) for b in json.loads(meta["unreadable"])]
    except Exception:  # noqa: BLE001 - a damaged cache is recomputed
        return None


class _Encodings:
    """Encodings of U clips, filled in as batches finish."""

    def __init__(self, clips: int, embed_dim: int):
        self.clips = clips
        self.emb = torch.zeros(clips, embed_dim)
        """(U, E) video embeddings."""
        self.video_tokens: torch.Tensor | None = None
        """(U, Q-1, E) fp16 video tokens, made on the first batch that has them."""

    def put(self, ix: list[int], emb: torch.Tensor, video_tokens: torch.Tensor | None) -> None:
        self.emb[ix] = emb.float().cpu()
        if video_tokens is not None:
            if self.video_tokens is None:
                self.video_tokens = torch.zeros(self.clips, *video_tokens.shape[1:], dtype=torch.float16)
            self.video_tokens[ix] = video_tokens.cpu().half()


def _encode_clips(model: VideoCoCa, keys: list[tuple], to_encode: list[int], out: _Encodings, *, num_frames: int,
                  pooling: str, return_tokens: bool, batch_size: int, workers: int, progress: bool,
                  encode: ClipKeyEncoder) -> list[tuple[str, str]]:
    """Read and encode the clips `keys[i]` for i in `to_encode` into `out` (with `encode`: this process's threads,
    or a backend's); returns the unreadable ones as (path, reason), in the order of `to_encode`."""
    unreadable: list[tuple[int, str]] = []
    for batch in encode(model, [keys[i] for i in to_encode], num_frames=num_frames, output="video", pooling=pooling,
                        return_tokens=return_tokens, batch_size=batch_size, workers=workers, progress=progress):
        unreadable += batch.failed
        if batch.ix:
            out.put([to_encode[j] for j in batch.ix], batch.embeddings, batch.video_tokens)
    return [(keys[to_encode[j]][0], reason) for j, reason in sorted(unreadable)]


# --------------------------------------------------------------------------- evaluation
def _prompt_names(ds: Dataset) -> list[str]:

    for name in BUNDLED_LABELS:
        bundled = load_labels(name)
        if list(bundled.labels) == ds.classes:
            return list(bundled.prompt_names)
    return [c.replace("_", " ") for c in ds.classes]


@renamed_keywords(frames="num_frames")
def evaluate_dataset(model: VideoCoCa, ds: Dataset, *, num_frames: int = 8, pooling: str = "attentional",
                     templates: str | Sequence[str] | None = None, limit: int | None = None,
                     generation: GenerationConfig = CAPTION_DECODING, batch_size: int = 8,
                     workers: int = 2, progress: bool = False, cache: bool = True, meteor: bool = True,
                     frame_tokens: Callable[[tuple], torch.Tensor | None] | None = None,
                     encode: ClipKeyEncoder | None = None) -> dict:
    """Metrics of one dataset for its task, with the protocol. `meteor`: also METEOR for captions (Java).

    `frame_tokens`: stored encoder tokens per clip, as in `encode_items` (validation during finetuning).
    `encode`: where clips are read and encoded, as in `encode_items` (default: this process). Moment retrieval
    encodes its sliding windows in this process only, and refuses another `encode`.
    """

    items = ds.items[:limit] if limit else list(ds.items)
    if not items:
        raise EvalError(f"{ds.name}: no videos to evaluate ({len(ds.missing)} listed videos are missing under --videos)")
    t0 = time.perf_counter()
    if ds.task == "moments":
        if encode not in (None, encode_clip_keys):
            raise EvalError(f"{ds.name}: moment retrieval runs on the local backend only (it encodes sliding windows "
                            "of whole videos, not the items of the annotation file)")
        return _evaluate_moments(model, ds, items, num_frames=num_frames, pooling=pooling, batch_size=batch_size,
                                 progress=progress, t0=t0)
    need_tokens = ds.task in ("caption", "qa")
    emb, video_tokens, rows, unreadable = encode_items(model, items, num_frames=num_frames, pooling=pooling,
                                             return_tokens=need_tokens,
                                             frame_tokens=frame_tokens, encode=encode or encode_clip_keys,
                                             batch_size=batch_size, workers=workers, progress=progress, cache=cache)
    bad = {p for p, _ in unreadable}
    keep = [i for i, it in enumerate(items) if it.path not in bad]
    enc = _Encoded([items[i] for i in keep], emb, video_tokens, [rows[i] for i in keep])
    protocol = _protocol(model, ds, enc.items, num_frames=num_frames, pooling=pooling, unreadable=len(bad))
    res = _SCORERS[ds.task](model, ds, enc, protocol, templates=templates, generation=generation, meteor=meteor)
    protocol["seconds"] = round(time.perf_counter() - t0, 1)
    return {"protocol": protocol, "metrics": res, "missing": ds.missing[:20]}


@dataclass
class _Encoded:
    """The readable items of a dataset and their encodings (rows of `emb`/`video_tokens`, shared by repeated videos)."""

    items: list[Item]
    emb: torch.Tensor
    """(V, E) video embeddings, one row per distinct clip."""
    video_tokens: torch.Tensor | None
    """(V, Q-1, E) generative tokens, for caption and QA."""
    rows: list[int]
    """Each item's row in emb / video_tokens."""


def _classify(model, ds, enc: _Encoded, protocol: dict, *, templates, **_) -> dict:
    """top-1/top-5 (per group too), or Charades' mAP for multi-label sets."""
    default = "single" if ds.name == "synthetic" else ("ucf101" if ds.name.startswith("ucf101") else "kinetics")
    tmpl = load_templates(templates or default)
    if ds.name == "synthetic" and templates is None:
        tmpl = tuple(CLASS_TEMPLATES)
    protocol["templates"] = len(tmpl)
    cls = ensemble_text_embeddings(model, _prompt_names(ds), tmpl)  # (C, E)
    scores = (enc.emb[enc.rows] @ cls.T).numpy()  # (N, C)
    res: dict = {}
    if ds.multi_label:
        targets = np.zeros_like(scores)
        for i, it in enumerate(enc.items):
            targets[i, it.labels] = 1
        res["mAP"] = M.charades_map(scores, targets)[0] * 100
        return res
    labels = [it.labels[0] for it in enc.items]
    res["top1"] = M.topk_accuracy(scores, labels, 1) * 100
    res["top5"] = M.topk_accuracy(scores, labels, 5) * 100
    for g in sorted({it.group for it in enc.items if it.group}):
        idx = [i for i, it in enumerate(enc.items) if it.group == g]
        res[f"top1[{g}]"] = M.topk_accuracy(scores[idx], [labels[i] for i in idx], 1) * 100
    return res


def _retrieve(model, ds, enc: _Encoded, protocol: dict, **_) -> dict:
    """R@1/5/10, median and mean rank, text->video and video->text (every caption of a video is a query)."""
    texts, owner = [], []
    vid_rows = sorted(set(enc.rows))
    col = {r: j for j, r in enumerate(vid_rows)}
    for it, r in zip(enc.items, enc.rows):
        for c in it.captions:
            texts.append(c)
            owner.append(col[r])
    t = torch.cat([model.encode_text(texts[i : i + 256]) for i in range(0, len(texts), 256)])
    sim = (t.float() @ enc.emb[vid_rows].T).numpy()  # (texts, videos)
    t2v, v2t = M.retrieval_ranks(sim, owner)
    protocol["texts"] = len(texts)
    return {**{f"t2v {k}": v for k, v in M.recall_metrics(t2v).items()},
            **{f"v2t {k}": v for k, v in M.recall_metrics(v2t).items()}}


def _caption(model, ds, enc: _Encoded, protocol: dict, *, generation: GenerationConfig, meteor: bool, **_) -> dict:
    """BLEU, ROUGE-L, CIDEr-D (METEOR with Java) of generated captions against every reference."""
    caps = []
    for i in range(0, len(enc.rows), 64):
        caps += model.generate(video_tokens=enc.video_tokens[enc.rows[i : i + 64]].float(), config=generation)
    res = dict(M.caption_metrics({i: it.captions for i, it in enumerate(enc.items)}, dict(enumerate(caps)),
                                 with_meteor=meteor))
    if enc.items[0].label_words:
        res["mentions label"] = float(np.mean([all(w in c.split() for w in it.label_words)
                                               for it, c in zip(enc.items, caps)]) * 100)
    res["examples"] = [[it.captions[0], c] for it, c in list(zip(enc.items, caps))[:5]]
    protocol.update(decoding=generation.method, num_beams=generation.num_beams, max_len=generation.max_len)
    return res


def _qa(model, ds, enc: _Encoded, protocol: dict, **_) -> dict:
    """Accuracy after VQA normalisation (per group too); iVQA's min(1, n/2) with its annotator agreement."""
    answers = []
    for i in range(0, len(enc.rows), 64):
        answers += model.answer(video_tokens=enc.video_tokens[enc.rows[i : i + 64]].float(),
                                questions=[it.question for it in enc.items[i : i + 64]])
    scores = M.qa_scores(answers, [it.answers for it in enc.items], agreement=ds.answer_agreement)
    res = {"accuracy": float(np.mean(scores)) * 100}
    for g in sorted({it.group for it in enc.items if it.group}):
        res[f"accuracy[{g}]"] = float(np.mean([x for x, it in zip(scores, enc.items) if it.group == g])) * 100
    protocol.update(template=QA_TEMPLATE, answer_normalisation="VQA (vqaEval.py)", answer_agreement=ds.answer_agreement)
    return res


_SCORERS = {"classify": _classify, "retrieve": _retrieve, "caption": _caption, "qa": _qa}


def _protocol(model: VideoCoCa, ds: Dataset, items: Sequence[Item], *, num_frames: int, pooling: str,
              unreadable: int) -> dict:
    """What an evaluation ran on and with (recorded next to its metrics; the frame count under "frames")."""
    return {"dataset": ds.name, "task": ds.task, **model.provenance(frames=num_frames, pooling=pooling),
            "videos_used": len({it.path for it in items}),
            "items": len(items), "videos_missing": len(ds.missing), "videos_unreadable": unreadable, **ds.protocol}


def _evaluate_moments(model: VideoCoCa, ds: Dataset, items: list[Item], *, num_frames: int, pooling: str,
                      batch_size: int, progress: bool, t0: float) -> dict:
    """Moment retrieval metrics (see eval/moments.py for how windows become predicted spans)."""

    ranked, unreadable, windows = rank_moments(model, items, num_frames=num_frames, pooling=pooling,
                                               batch_size=batch_size, progress=progress)
    kept = [(it, r) for it, r in zip(items, ranked) if r is not None]
    if not kept:
        raise EvalError(f"{ds.name}: none of the {len({it.path for it in items})} videos could be read "
                        f"(first: {unreadable[0][0]}: {unreadable[0][1]})")
    res = M.moment_metrics([r for _, r in kept], [(it.start, it.end) for it, _ in kept])
    protocol = _protocol(model, ds, [it for it, _ in kept], num_frames=num_frames, pooling=pooling,
                         unreadable=len(unreadable))
    protocol.update(unit_windows=windows, unit=MOMENT_UNIT, span_scales=list(MOMENT_SCALES), stride=MOMENT_STRIDE,
                    nms_iou=MOMENT_NMS, seconds=round(time.perf_counter() - t0, 1))
    return {"protocol": protocol, "metrics": res, "missing": ds.missing[:20]}


@renamed_keywords(frames="num_frames")
def evaluate(model: VideoCoCa, task: str, datasets: list[Dataset], **kwargs) -> dict:
    """Each dataset's results, and the mean over splits when there are several (UCF101 / HMDB51 protocol).

    Every dataset must have been read for `task` (`load_datasets(task, ...)`): the metrics are the task's.
    """
    for ds in datasets:
        if ds.task != task:
            raise EvalError(f"{ds.name} was read for {ds.task}, not {task}; read it with load_datasets({task!r}, ...)")
    results = [evaluate_dataset(model, ds, **kwargs) for ds in datasets]
    out = {"task": task, "results": results}
    if len(results) > 1:
        keys = [k for k in results[0]["metrics"] if isinstance(results[0]["metrics"][k], float)]
        out["mean_over_splits"] = {k: float(np.mean([r["metrics"][k] for r in results])) for k in keys}
    return out


def markdown_row(result: dict) -> str:
    """One markdown table row: dataset, model, frames, pooling, then the numeric metrics."""
    p, m = result["protocol"], result["metrics"]
    nums = [f"{k} {v:.1f}" for k, v in m.items() if isinstance(v, float)]
    return (f"| {p['dataset']} | {p['model']} [{p['pretrained'] or 'random'}] | {p['frames']} | {p['pooling']} | "
            f"{p['videos_used']} used / {p['videos_missing']} missing | " + " · ".join(nums) + " |")
