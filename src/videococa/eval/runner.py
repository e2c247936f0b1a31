"""`videococa eval`: a benchmark's annotations + the user's videos -> metrics, with the protocol recorded.

Video embeddings (and, for captioning and QA, the decoder tokens) are cached per model fingerprint,
frames, pooling and the exact list of clips, in $VIDEOCOCA_CACHE/eval, so re-running with other
prompts, templates or decoding settings costs no re-encoding.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..cache import cache_root
from ..files import load_tensors, save_tensors_atomic
from ..data import readers as R
from ..data.readers import AnnotationError, Dataset, Item
from ..errors import VideoCoCaError
from ..models.videococa import VideoCoCa
from ..video.reader import read_video
from . import metrics as M

TASKS = ("classify", "retrieve", "caption", "qa")
DATASETS: dict[str, tuple[str, ...]] = {
    "classify": ("kinetics400", "kinetics600", "kinetics700", "ucf101", "hmdb51", "charades", "synthetic"),
    "retrieve": ("msrvtt", "msrvtt-1ka", "msvd", "vatex", "activitynet", "synthetic"),
    "caption": ("msrvtt", "msvd", "vatex", "youcook2", "activitynet-segments", "synthetic"),
    "qa": ("msrvtt-qa", "msvd-qa", "activitynet-qa", "ivqa", "synthetic"),
}
ANNOTATIONS_HELP = {
    "kinetics400": "the Kinetics csv (label,youtube_id,time_start,time_end,split)",
    "ucf101": "classInd.txt and testlist0N.txt (one or more splits)",
    "hmdb51": "the *_test_splitN.txt files (one or more splits)",
    "charades": "Charades_v1_test.csv and Charades_v1_classes.txt",
    "msrvtt": "test_videodatainfo.json (or train_val_videodatainfo.json)",
    "msrvtt-1ka": "MSRVTT_JSFUSION_test.csv",
    "msvd": "AllVideoDescriptions.txt",
    "vatex": "the VATEX json",
    "activitynet": "the ActivityNet Captions json (val_1.json)",
    "youcook2": "youcookii_annotations_trainval.json",
    "msrvtt-qa": "test.json of MSRVTT-QA",
    "msvd-qa": "test.json of MSVD-QA (and youtube_mapping.txt)",
    "activitynet-qa": "test_q.json and test_a.json",
    "ivqa": "the iVQA csv",
    "synthetic": "annotations.json of a synthetic benchmark folder",
}


class EvalError(VideoCoCaError):
    """An evaluation that cannot run as asked (dataset, task or annotation files)."""


# --------------------------------------------------------------------------- datasets
def _by_name(files: Sequence[str], pattern: str, what: str) -> list[str]:
    found = [f for f in files if re.search(pattern, Path(f).name)]
    if not found:
        raise EvalError(f"no {what} among --annotations ({', '.join(Path(f).name for f in files)})")
    return found


def _split_of(path: str) -> str:
    m = re.search(r"(\d)\.txt$", Path(path).name)
    return m.group(1) if m else "?"


def read_synthetic(annotations: str | os.PathLike, task: str) -> Dataset:
    """The synthetic benchmark's annotations.json, as the given task sees it (items carry groups for breakdowns)."""
    from ..synthetic.benchmark import load_benchmark

    root = Path(annotations).parent
    if not (root / "annotations.json").is_file():
        raise AnnotationError(f"{str(annotations)!r} is not a synthetic benchmark's annotations.json")
    vitems, doc = load_benchmark(root)
    classes = doc["classes"]
    items: list[Item] = []
    for v in vitems:
        vid = Path(v.path).stem
        if task == "classify":
            items.append(Item(vid, v.path, labels=[classes.index(v.label)], group="late" if v.late else "early"))
        elif task == "retrieve":
            items.append(Item(vid, v.path, captions=v.captions[:1]))
        elif task == "caption":
            items.append(Item(vid, v.path, captions=list(v.captions), label_words=v.label.split()))
        else:
            for q, a, kind in v.questions:
                items.append(Item(vid, v.path, question=q, answers=[a], group=kind))
    return Dataset("synthetic", task, items, [], classes=classes)


def load_datasets(task: str, name: str, annotations: Sequence[str], videos: str | None,
                  split: str | None = None) -> list[Dataset]:
    """The dataset(s) to evaluate: several for UCF101 / HMDB51 when more than one split is given."""
    if task not in TASKS:
        raise EvalError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    if name not in DATASETS[task]:
        raise EvalError(f"dataset {name!r} is not a {task} benchmark; choose one of: {', '.join(DATASETS[task])}")
    files = [str(a) for a in annotations]
    if not files:
        raise EvalError(f"--annotations is required: {ANNOTATIONS_HELP.get(name, 'the annotation file(s)')}")
    if name == "synthetic":
        return [read_synthetic(f, task) for f in files]
    if videos is None:
        raise EvalError("--videos DIR is required: the root of your local copy of the videos")
    if name.startswith("kinetics"):
        from ..tasks.labels import BUNDLED_LABELS, load_labels

        classes = load_labels(name).labels if name in BUNDLED_LABELS else None
        return [R.read_kinetics(files[0], videos, classes=classes, name=name)]
    if name == "ucf101":
        (class_ind,) = _by_name(files, r"classInd", "classInd.txt")
        tests = sorted(_by_name(files, r"testlist0\d\.txt", "testlist0N.txt"))
        if split:
            tests = [t for t in tests if _split_of(t) == split] or _missing_split(split, tests)
        return [R.read_ucf101(class_ind, t, videos) for t in tests]
    if name == "hmdb51":
        splits: dict[str, list[str]] = {}
        for f in _by_name(files, r"_test_split\d\.txt", "*_test_splitN.txt files"):
            splits.setdefault(_split_of(f), []).append(f)
        keys = [split] if split else sorted(splits)
        if split and split not in splits:
            _missing_split(split, files)
        return [R.read_hmdb51(splits[k], videos) for k in keys]
    if name == "charades":
        (test,) = _by_name(files, r"\.csv$", "Charades_v1_test.csv")
        (classes,) = _by_name(files, r"classes\.txt$", "Charades_v1_classes.txt")
        return [R.read_charades(test, classes, videos)]
    if name == "msrvtt":
        return [R.read_msrvtt(files[0], videos)]
    if name == "msrvtt-1ka":
        return [R.read_msrvtt_1ka(files[0], videos)]
    if name == "msvd":
        return [R.read_msvd(files[0], videos)]
    if name == "vatex":
        return [R.read_vatex(files[0], videos)]
    if name == "activitynet":
        return [R.read_activitynet_captions(files[0], videos)]
    if name == "activitynet-segments":
        return [R.read_activitynet_captions(files[0], videos, level="segment")]
    if name == "youcook2":
        return [R.read_youcook2(files[0], videos)]
    if name == "msrvtt-qa":
        return [R.read_msrvtt_qa(files[0], videos)]
    if name == "msvd-qa":
        mapping = [f for f in files if "mapping" in Path(f).name]
        qa = [f for f in files if f not in mapping]
        return [R.read_msvd_qa(qa[0], videos, mapping=mapping[0] if mapping else None)]
    if name == "activitynet-qa":
        (q,) = _by_name(files, r"_q\.json$", "test_q.json")
        (a,) = _by_name(files, r"_a\.json$", "test_a.json")
        return [R.read_activitynet_qa(q, a, videos)]
    return [R.read_ivqa(files[0], videos)]


def _missing_split(split: str, files) -> list:
    raise EvalError(f"--split {split}: no annotation file of that split among {', '.join(Path(f).name for f in files)}")


# --------------------------------------------------------------------------- encoding with a cache
def encode_items(model: VideoCoCa, items: Sequence[Item], *, frames: int, pooling: str, tokens: bool,
                 batch_size: int = 8, workers: int = 2, progress: bool = False, cache: bool = True,
                 frame_tokens: Callable[[tuple], torch.Tensor | None] | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor | None, list[int], list[tuple[str, str]]]:
    """(embeddings (U, E), tokens (U, Q-1, E) or None, item -> row, unreadable (path, reason)) over unique clips.

    `frame_tokens((path, start, end))` may return a clip's stored encoder tokens (T, N, W) (a finetuning
    feature cache); such clips are pooled from them without decoding or encoding (attentional pooling only).
    """
    clips: dict[tuple, int] = {}
    rows = []
    for it in items:
        key = (it.path, it.start, it.end)
        rows.append(clips.setdefault(key, len(clips)))
    keys = list(clips)
    stamp = [(p, s, e, st.st_size, st.st_mtime_ns) for p, s, e in keys for st in [os.stat(p)]]
    h = hashlib.sha256(json.dumps([model.fingerprint(), frames, pooling, tokens, stamp]).encode()).hexdigest()[:24]
    path = cache_root() / "eval" / f"{model.info.name}-{h}.safetensors"
    if cache and path.is_file():
        try:
            d, meta = load_tensors(path)
            return d["embeddings"], d.get("tokens"), rows, [tuple(b) for b in json.loads(meta["unreadable"])]
        except Exception:  # noqa: BLE001 - a damaged cache is recomputed
            pass
    info = model.info
    emb = torch.zeros(len(keys), info.embed_dim)
    tok = None
    unreadable: list[tuple[str, str]] = []

    def read(key):
        p, s, e = key
        try:
            return read_video(p, frames, start=s, end=e, size=info.image_size, mean=info.image_mean,
                              std=info.image_std).frames
        except (VideoCoCaError, ValueError) as exc:
            return str(exc)

    stored: dict[int, torch.Tensor] = {}
    if frame_tokens is not None and pooling == "attentional":
        cache = False  # results from stored tokens are not written to the evaluation cache
        stored = {i: t for i, k in enumerate(keys) for t in [frame_tokens(k)] if t is not None}

    def put(ix, e, t):
        nonlocal tok
        emb[ix] = e.float().cpu()
        if t is not None:
            if tok is None:
                tok = torch.zeros(len(keys), *t.shape[1:], dtype=torch.float16)
            tok[ix] = t.cpu().half()

    ordered = sorted(stored)
    for start in range(0, len(ordered), batch_size):
        part = ordered[start : start + batch_size]
        e, t = model.pool_frame_tokens(torch.stack([stored[i] for i in part]))  # (b, T, N, W) -> (b, E), (b, Q-1, E)
        put(part, e, t if tokens else None)
    to_encode = [i for i in range(len(keys)) if i not in stored]
    with ThreadPoolExecutor(max(1, workers)) as pool, tqdm(total=len(to_encode), desc="encode", unit="clip",
                                                         disable=not progress, leave=False) as bar:
        for start in range(0, len(to_encode), batch_size):
            part = to_encode[start : start + batch_size]
            got = list(pool.map(read, [keys[i] for i in part]))
            ok = [i for i, g in zip(part, got) if isinstance(g, torch.Tensor)]
            unreadable += [(keys[i][0], g) for i, g in zip(part, got) if not isinstance(g, torch.Tensor)]
            if ok:
                out = model.encode_video(torch.stack([got[part.index(i)] for i in ok]), pooling=pooling,
                                         return_tokens=tokens)
                e, t = out if tokens else (out, None)
                put(ok, e, t)
            bar.update(len(part))
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        d = {"embeddings": emb} if tok is None else {"embeddings": emb, "tokens": tok}
        save_tensors_atomic(path, d, metadata={"unreadable": json.dumps(unreadable)})
    return emb, tok, rows, unreadable


# --------------------------------------------------------------------------- evaluation
def _prompt_names(ds: Dataset) -> list[str]:
    from ..tasks.labels import BUNDLED_LABELS, load_labels

    for name in BUNDLED_LABELS:
        bundled = load_labels(name)
        if list(bundled.labels) == ds.classes:
            return list(bundled.prompt_names)
    return [c.replace("_", " ") for c in ds.classes]


def evaluate_dataset(model: VideoCoCa, ds: Dataset, *, frames: int = 8, pooling: str = "attentional",
                     templates: str | Sequence[str] | None = None, limit: int | None = None,
                     caption_method: str = "beam", num_beams: int = 3, max_len: int = 20, batch_size: int = 8,
                     workers: int = 2, progress: bool = False, cache: bool = True, meteor: bool = True,
                     frame_tokens: Callable[[tuple], torch.Tensor | None] | None = None) -> dict:
    """Metrics of one dataset for its task, with the protocol. `meteor`: also METEOR for captions (Java).

    `frame_tokens`: stored encoder tokens per clip, as in `encode_items` (validation during finetuning).
    """
    from ..tasks.classify import ensemble_text_embeddings
    from ..tasks.labels import load_templates

    items = ds.items[:limit] if limit else list(ds.items)
    if not items:
        raise EvalError(f"{ds.name}: no videos to evaluate ({len(ds.missing)} listed videos are missing under --videos)")
    t0 = time.perf_counter()
    need_tokens = ds.task in ("caption", "qa")
    emb, tok, rows, unreadable = encode_items(model, items, frames=frames, pooling=pooling, tokens=need_tokens,
                                             frame_tokens=frame_tokens,
                                             batch_size=batch_size, workers=workers, progress=progress, cache=cache)
    bad = {p for p, _ in unreadable}
    keep = [i for i, it in enumerate(items) if it.path not in bad]
    items = [items[i] for i in keep]
    rows = [rows[i] for i in keep]
    e = emb[rows]  # (N, E)
    res: dict = {}
    protocol: dict = {"dataset": ds.name, "task": ds.task, "model": model.info.name,
                      "pretrained": model.info.pretrained, "fingerprint": model.fingerprint(),
                      "precision": model.precision, "frames": frames, "sampling": "uniform", "pooling": pooling,
                      "videos_used": len({it.path for it in items}), "items": len(items),
                      "videos_missing": len(ds.missing), "videos_unreadable": len(bad)}
    if ds.task == "classify":
        default = "single" if ds.name == "synthetic" else ("ucf101" if ds.name.startswith("ucf101") else "kinetics")
        tmpl = load_templates(templates or default)
        if ds.name == "synthetic":
            from ..synthetic.evaluate import CLASS_TEMPLATES

            tmpl = tuple(CLASS_TEMPLATES) if templates is None else tmpl
        protocol["templates"] = len(tmpl)
        cls = ensemble_text_embeddings(model, _prompt_names(ds), tmpl)  # (C, E)
        scores = (e @ cls.T).numpy()
        if ds.multi_label:
            targets = np.zeros_like(scores)
            for i, it in enumerate(items):
                targets[i, it.labels] = 1
            res["mAP"] = M.charades_map(scores, targets)[0] * 100
        else:
            labels = [it.labels[0] for it in items]
            res["top1"] = M.topk_accuracy(scores, labels, 1) * 100
            res["top5"] = M.topk_accuracy(scores, labels, 5) * 100
            for g in sorted({it.group for it in items if it.group}):
                idx = [i for i, it in enumerate(items) if it.group == g]
                res[f"top1[{g}]"] = M.topk_accuracy(scores[idx], [labels[i] for i in idx], 1) * 100
    elif ds.task == "retrieve":
        texts, owner = [], []
        vid_rows = sorted(set(rows))
        col = {r: j for j, r in enumerate(vid_rows)}
        for it, r in zip(items, rows):
            for c in it.captions:
                texts.append(c)
                owner.append(col[r])
        t = torch.cat([model.encode_text(texts[i : i + 256]) for i in range(0, len(texts), 256)])
        sim = (t.float() @ emb[vid_rows].T).numpy()  # (texts, videos)
        t2v, v2t = M.retrieval_ranks(sim, owner)
        res.update({f"t2v {k}": v for k, v in M.recall_metrics(t2v).items()})
        res.update({f"v2t {k}": v for k, v in M.recall_metrics(v2t).items()})
        protocol["texts"] = len(texts)
    elif ds.task == "caption":
        caps = []
        for i in range(0, len(rows), 64):
            caps += model.generate(tokens=tok[rows[i : i + 64]].float(), method=caption_method, num_beams=num_beams,
                                   max_len=max_len, min_len=2)
        refs = {i: it.captions for i, it in enumerate(items)}
        res.update(M.caption_metrics(refs, dict(enumerate(caps)), with_meteor=meteor))
        if items[0].label_words:
            res["mentions label"] = float(np.mean([all(w in c.split() for w in it.label_words)
                                                   for it, c in zip(items, caps)]) * 100)
        res["examples"] = [[it.captions[0], c] for it, c in list(zip(items, caps))[:5]]
        protocol.update(decoding=caption_method, num_beams=num_beams, max_len=max_len)
    else:
        answers = []
        for i in range(0, len(rows), 64):
            answers += model.answer(tokens=tok[rows[i : i + 64]].float(),
                                    questions=[it.question for it in items[i : i + 64]])
        res["accuracy"] = M.qa_accuracy(answers, [it.answers for it in items]) * 100
        for g in sorted({it.group for it in items if it.group}):
            idx = [i for i, it in enumerate(items) if it.group == g]
            res[f"accuracy[{g}]"] = M.qa_accuracy([answers[i] for i in idx], [items[i].answers for i in idx]) * 100
        protocol["template"] = "question: {} answer:"
    protocol["seconds"] = round(time.perf_counter() - t0, 1)
    return {"protocol": protocol, "metrics": res, "missing": ds.missing[:20]}


def evaluate(model: VideoCoCa, task: str, datasets: list[Dataset], **kwargs) -> dict:
    """Each dataset's results, and the mean over splits when there are several (UCF101 / HMDB51 protocol)."""
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
