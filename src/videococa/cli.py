"""The `videococa` command: argument parsing and printing only; every command calls the public API.

Output: an aligned table on a terminal; JSON lines with --json or when stdout is not a terminal.
Progress bars go to stderr, only when it is a terminal. Exit codes: 0 all fine, 1 some inputs
failed (each named on stderr, the rest processed), 2 usage errors, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import math
import os
import sys
import threading
import time
import warnings
from typing import Sequence

from .backends import BACKENDS, RayOptions, get_backend
from .data.registry import TASKS, dataset_help, finetune_reading, load_datasets, split_help
from .errors import VideoCoCaError, VideoDecodeError
from .files import write_json_atomic
from .interrupt import catching_sigint, check
from .limits import MAX_BATCH_FRAMES, MAX_FRAMES, MAX_SEGMENT, MIN_SEGMENT
from .paths import display, is_utf8, shorten

# The commands import what they run (torch, open_clip, PyAV, FAISS) inside their functions, each marked
# "heavy (see the top)", so `videococa --help` and usage errors answer at once.

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A command line that cannot be run as given (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors exit 2 with one clear line
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _bounded_int(lo: int, hi: int, what: str = "an integer"):
    """An argparse type: an integer in [lo, hi], with a message naming the range."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} from {lo} to {hi}, got {shorten(text)!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"expected {what} from {lo} to {hi}, got {shorten(text)!r}")
        return v

    return parse


def _bounded_float(lo: float, hi: float, what: str = "a number", *, open_low: bool = True):
    """An argparse type: a finite number in (lo, hi] (or [lo, hi] with open_low=False)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            v = math.nan
        low_ok = v > lo if open_low else v >= lo
        if not (math.isfinite(v) and low_ok and v <= hi):
            side = "above" if open_low else "at least"
            raise argparse.ArgumentTypeError(f"expected {what} {side} {lo:g} and at most {hi:g}, got {shorten(text)!r}")
        return v

    return parse


def _task_name(retrieval: str):
    """An argparse type: the task names as written, with `retrieve` and `retrieval` accepted for each other
    (eval and cache-features say `retrieve`, finetune `retrieval`; both spellings work everywhere)."""

    def parse(text: str) -> str:
        return retrieval if text in ("retrieve", "retrieval") else text

    return parse


_positive_int = _bounded_int(1, 1_000_000, "a positive integer")
_num_frames = _bounded_int(1, MAX_FRAMES, "a number of frames (VideoCoCa's limit is the upper bound)")
_batch = _bounded_int(1, 4096, "a batch size")
_workers = _bounded_int(0, 64, "a number of reading threads")
_top_k = _bounded_int(1, 10_000, "a number of results")
_segment = _bounded_float(MIN_SEGMENT, MAX_SEGMENT, "a segment length in seconds", open_low=False)
_weight = _bounded_float(0, 1e6, "a loss weight", open_low=False)
_lr = _bounded_float(0, 1.0, "a learning rate")


def _add_model_options(p: argparse.ArgumentParser, *, num_frames: bool = True) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None, help="model name (default: videococa-tiny, the bundled model)")
    g.add_argument("--pretrained", default=None, help="pretrained tag, hf-hub:org/repo, or a weights file")
    g.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto (default): bf16 where the hardware multiplies it natively (CUDA, AMX, AVX512-BF16), "
                   "else fp32")
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    g.add_argument("--finetuned", default=None, metavar="RUN_DIR", help="apply a `videococa finetune` run to the model")
    if num_frames:
        g.add_argument("--frames", "--num-frames", dest="num_frames", type=_num_frames, default=8,
                       help=f"frames sampled per video (default 8, at most {MAX_FRAMES})")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--batch-size", type=_batch, default=4, help="videos per model call (default 4)")
    g.add_argument("--workers", type=_workers, default=2, help="threads reading videos (default 2; 0 reads inline)")
    g.add_argument("--json", action="store_true", help="JSON lines (the default when stdout is not a terminal)")


def _add_backend_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("backend (where the videos are read and encoded)")
    g.add_argument("--backend", default="local", choices=BACKENDS,
                   help="local: threads in this process (default); ray: a Ray cluster (pip install 'videococa[ray]')")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster to join (auto, HOST:6379, ray://HOST:10001; default $RAY_ADDRESS, else a Ray "
                        "runtime on this machine for this run)")
    g.add_argument("--ray-actors", type=_positive_int, default=None, metavar="N",
                   help="model replicas (default: one per GPU, else one per two CPUs)")
    g.add_argument("--ray-gpus-per-actor", type=_bounded_float(0, 64, "a number of GPUs", open_low=False),
                   default=None, metavar="G", help="GPUs per replica (default: 1 when the cluster has GPUs, else 0)")


def _backend(args):
    """The backend the command runs on (a context manager: a Ray runtime it starts is stopped at the end)."""
    if args.backend == "local":
        if args.ray_address or args.ray_actors or args.ray_gpus_per_actor is not None:
            raise UsageError("--ray-address, --ray-actors and --ray-gpus-per-actor need --backend ray")
        return get_backend("local")
    return get_backend("ray", ray=RayOptions(address=args.ray_address, actors=args.ray_actors,
                                             gpus_per_actor=args.ray_gpus_per_actor))


def _report_run(args, backend) -> None:
    """The Ray run's summary (items, failures, videos/s per stage, where the time went) on stderr."""
    summary = getattr(backend, "last_summary", None)
    if summary is not None and not _json_mode(args):
        for line in summary.lines():
            print(f"videococa {args.command}: {line}", file=sys.stderr)


def _sub(sub, name: str, help: str, example: str, func, *, model: bool = True, run: bool = True) -> argparse.ArgumentParser:
    """A subcommand with an example in its help, the common model and run options, and its function."""
    p = sub.add_parser(name, help=help, description=f"{help[0].upper()}{help[1:]}.\n\nexample:\n  {example}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    if model:
        _add_model_options(p)
    if run:
        _add_run_options(p)
    p.set_defaults(func=func)
    return p


def _load(args, *, name: str | None = None, pretrained: str | None = None, precision: str | None = None):
    from .models import load_model  # noqa: PLC0415 - heavy (see the top)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights warning is printed by the caller
        return load_model(name or args.model, pretrained or args.pretrained, device=args.device,
                          precision=precision or args.precision, finetuned=getattr(args, "finetuned", None))


# --------------------------------------------------------------------------- output
def _json_mode(args) -> bool:
    return bool(getattr(args, "json", False)) or not sys.stdout.isatty()


def _progress(args) -> bool:
    return sys.stderr.isatty() and not getattr(args, "json", False)


def _table(rows: list[dict], columns: Sequence[str]) -> None:
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    return "" if v is None else display(str(v))  # no terminal escapes or line breaks from file names


def _json_line(obj) -> str:
    """One JSON line; a non-UTF-8 file name is written with \\udcXX escapes (json.loads gives the name back)."""
    line = json.dumps(obj, ensure_ascii=False)
    return line if is_utf8(line) else json.dumps(obj)


def _emit(args, rows: list[dict], columns: Sequence[str]) -> None:
    if _json_mode(args):
        for r in rows:
            print(_json_line(r))
    elif rows:
        _table(rows, columns)
    sys.stdout.flush()


def _say(prefix: str, path: str, reason: str) -> None:
    print(f"videococa: {prefix} {display(path)}: {display(reason)}", file=sys.stderr)


def _report_failures(failures, notes=()) -> int:
    for n in notes:
        _say("note:", n.path, n.reason)
    for f in failures:
        _say("skipped", f.path, f.reason)
    return EXIT_SOME_FAILED if failures else EXIT_OK


def _add_sampling_option(p: argparse.ArgumentParser, recorded: str = "printed in a frame_times column") -> None:
    """--sampling, for every command that reads videos; `recorded`: where the times of the frames used go."""
    p.add_argument("--sampling", default="uniform", choices=["uniform", "keyframes"],
                   help="uniform (default): the exact frame shown at each of T evenly spaced times; keyframes: the "
                   "keyframe nearest each time, decoding nothing else (much faster on long files; the times of the "
                   f"frames used are {recorded})")


def _sampling(args) -> dict:
    """The encode keyword for --sampling (none for the default, so any batch encoder takes it)."""
    return {} if getattr(args, "sampling", "uniform") == "uniform" else {"sampling": args.sampling}


def _frame_times(args, clip) -> dict:
    """The frame_times column in keyframes mode: the times (s) of the keyframes that stood in for the samples."""
    return {"frame_times": [round(t, 3) for t in clip.timestamps]} if _sampling(args) else {}


def _encode(args, model, videos, *, return_tokens=False, desc="encode"):
    """(encoded clips, failures) for the given inputs; directories are expanded."""
    from .tasks import encode_videos, scan_report  # noqa: PLC0415 - heavy (see the top)
    from .video import FileIssue  # noqa: PLC0415 - heavy (see the top)

    paths, failures, notes = scan_report(videos)
    _report_failures([], notes)
    done = []
    for item in encode_videos(model, paths, num_frames=args.num_frames, batch_size=args.batch_size,
                              workers=args.workers, pooling=getattr(args, "pooling", "attentional"), return_tokens=return_tokens,
                              progress=_progress(args), desc=desc, **_sampling(args)):
        (failures if isinstance(item, FileIssue) else done).append(item)
    return done, failures


# --------------------------------------------------------------------------- commands
def cmd_models(args) -> int:
    from .models import list_models  # noqa: PLC0415 - heavy (see the top)

    models = list_models()
    if args.json:
        print(json.dumps(models))
    else:
        width = max(map(len, models))
        for name, tags in models.items():
            print(f"{name:<{width}}  {', '.join(tags) if tags else '(no pretrained tags; local weights file)'}")
    return EXIT_OK


def cmd_classify(args) -> int:
    from .tasks import ZeroShotClassifier, load_labels, load_templates  # noqa: PLC0415 - heavy (see the top)

    labels = load_labels(args.labels)  # bad label sets fail before the model loads
    load_templates(args.templates, labels)
    model = _load(args)
    clf = ZeroShotClassifier(model, labels, args.templates, multi_label=True if args.multi_label else None)
    done, failures = _encode(args, model, args.videos, desc="classify")
    rows = []
    for item in done:
        preds = clf.classify(item.embedding[None], top_k=args.top_k)[0]
        if _json_mode(args):
            rows.append({"video": item.clip.path, "predictions": [{"label": p.label, "score": round(p.score, 6)}
                                                                  for p in preds], **_frame_times(args, item.clip)})
        else:
            rows.extend({"video": item.clip.path if r == 0 else "", "rank": r + 1, "label": p.label,
                         "score": p.score, **(_frame_times(args, item.clip) if r == 0 else {"frame_times": ""})}
                        for r, p in enumerate(preds))
    _emit(args, rows, ["video", "rank", "label", "score"] + (["frame_times"] if _sampling(args) else []))
    return _report_failures(failures)


def _index_from_parquet(args) -> int:
    """`index --from-parquet SRC`: merge embeddings written by `embed` (the model and protocol are the files')."""
    from .index import VideoIndex  # noqa: PLC0415 - heavy (see the top)
    from .tasks.embed import embedding_files, embedding_settings  # noqa: PLC0415 - heavy (see the top)

    if args.videos or args.repair:
        raise UsageError("--from-parquet merges embeddings already computed; give no videos (and no --repair) with it")
    files = embedding_files(args.from_parquet)
    meta = embedding_settings(files[0])
    model = _load(args, name=args.model or meta["model"], pretrained=args.pretrained or meta["pretrained"] or None,
                  precision=meta["precision"])
    new = not os.path.isfile(os.path.join(args.index, "index.sqlite"))
    opts = dict(num_frames=int(meta["frames"]), pooling=meta["pooling"], segment=float(meta["segment"]) or None,
                captions=meta.get("captions") is not None, sampling=meta["sampling"]) if new else {}
    with VideoIndex(args.index, model, faiss=args.faiss, **opts) as index:
        report = index.add_parquet(args.from_parquet)
        summary = {"index": str(args.index), "added": len(report.added), "updated": len(report.updated),
                   "unchanged": len(report.unchanged), "failed": len(report.failed), "entries": len(index),
                   "files": len(index.files()), "search": index.faiss_kind}
    if _json_mode(args):
        print(_json_line(summary))
    else:
        print(f"{display(summary['index'])}: {summary['added']} added, {summary['updated']} re-embedded, "
              f"{summary['unchanged']} unchanged, {summary['failed']} failed (from {len(files)} Parquet files); "
              f"{summary['entries']} entries from {summary['files']} files ({summary['search']} search)")
    sys.stdout.flush()
    return _report_failures(report.failed, report.notes)


def cmd_index(args) -> int:
    from .index import VideoIndex  # noqa: PLC0415 - heavy (see the top)

    if args.from_parquet:
        return _index_from_parquet(args)
    if not args.videos and not args.repair:
        raise UsageError("give the video directories or files to index (or --repair), or --from-parquet SRC")
    model = _load(args)
    if args.repair:
        fixed = VideoIndex.repair(args.index, model)
        if fixed.fresh:
            msg = "its settings were unreadable, so it starts empty and every file is embedded again"
        else:
            msg = (f"kept {fixed.files_kept} files ({fixed.entries_kept} entries); {len(fixed.files_dropped)} files "
                   "with unreadable entries are embedded again on the next run")
        where = f"; the damaged database is kept as {display(fixed.damaged_copy)}" if fixed.damaged_copy else ""
        print(f"videococa index: repaired {display(args.index)}: {msg}{where}", file=sys.stderr)
        if not args.videos:
            return EXIT_OK
    with VideoIndex(args.index, model, num_frames=args.num_frames, segment=args.segment, captions=args.captions,
                    faiss=args.faiss, sampling=args.sampling) as index, _backend(args) as backend:
        report = index.update(args.videos, batch_size=args.batch_size, workers=args.workers,
                              progress=_progress(args), encode=backend.encode_files)
        _report_run(args, backend)
        summary = {"index": str(args.index), "added": len(report.added), "updated": len(report.updated),
                   "unchanged": len(report.unchanged), "moved": len(report.moved), "removed": len(report.removed),
                   "failed": len(report.failed), "entries": len(index), "files": len(index.files()),
                   "search": index.faiss_kind}
    if _json_mode(args):
        print(_json_line(summary))
    else:
        print(f"{display(summary['index'])}: {summary['added']} added, {summary['updated']} re-embedded, "
              f"{summary['unchanged']} unchanged, {summary['moved']} moved, {summary['removed']} removed, "
              f"{summary['failed']} failed; {summary['entries']} entries from {summary['files']} files "
              f"({summary['search']} search)")
    sys.stdout.flush()
    return _report_failures(report.failed, report.notes)


def cmd_search(args) -> int:
    from .index import VideoIndex  # noqa: PLC0415 - heavy (see the top)

    if (args.query is None) == (args.video is None):
        raise UsageError("give a text QUERY or --video VIDEO (one of them)")
    if args.query is not None and not args.query.strip():
        raise UsageError("the search query is empty")
    s = VideoIndex.recorded_settings(args.index)  # a missing index fails before any model loads
    model = _load(args, name=args.model or s["model"], pretrained=args.pretrained or s["pretrained"] or None,
                  precision=args.precision or s["precision"])
    with VideoIndex(args.index, model, create=False) as index:
        hits = index.search_video(args.video, top_k=args.top_k) if args.video else index.search(args.query,
                                                                                             top_k=args.top_k)
    rows = [{"rank": i + 1, "score": round(h.score, 6), "path": h.path, "start": round(h.start, 3),
             "end": round(h.end, 3), **({"caption": h.caption} if h.caption is not None else {})}
            for i, h in enumerate(hits)]
    _emit(args, rows, ["rank", "score", "path", "start", "end"] + (["caption"] if any("caption" in r for r in rows) else []))
    return EXIT_OK


def cmd_caption(args) -> int:
    from .models.decoding import GenerationConfig  # noqa: PLC0415 - heavy (see the top)
    from .tasks import scan_report  # noqa: PLC0415 - heavy (see the top)
    from .video import FileIssue  # noqa: PLC0415 - heavy (see the top)

    config = GenerationConfig(method=args.method, num_beams=args.num_beams, max_len=args.max_len, seed=args.seed)
    config.check()
    model = _load(args)
    paths, failures, notes = scan_report(args.videos)
    _report_failures([], notes)
    rows = []
    with _backend(args) as backend:
        for item in backend.encode_files(model, paths, num_frames=args.num_frames, batch_size=args.batch_size,
                                         workers=args.workers, captions=config, prompt=args.prompt,
                                         progress=_progress(args), desc="caption", **_sampling(args)):
            if isinstance(item, FileIssue):
                failures.append(item)
            else:
                rows.extend({"video": d.clip.path, "caption": d.caption, **_frame_times(args, d.clip)} for d in item)
        _report_run(args, backend)
    _emit(args, rows, ["video", "caption"] + (["frame_times"] if _sampling(args) else []))
    return _report_failures(failures)


def cmd_ask(args) -> int:
    import torch

    *videos, question = args.args
    if not videos:
        raise UsageError("give at least one VIDEO and then the QUESTION")
    if not question.strip():
        raise UsageError("the question is empty")
    model = _load(args)
    done, failures = _encode(args, model, videos, return_tokens=True, desc="ask")
    rows = []
    for i in range(0, len(done), args.batch_size):
        part = done[i : i + args.batch_size]
        answers = model.answer(video_tokens=torch.stack([d.video_tokens for d in part]), questions=question)
        rows.extend({"video": d.clip.path, "question": question, "answer": a} for d, a in zip(part, answers))
    _emit(args, rows, ["video", "question", "answer"])
    return _report_failures(failures)


def cmd_embed(args) -> int:
    from .index.store import INDEX_CAPTIONS  # noqa: PLC0415 - heavy (see the top)
    from .tasks import scan_report  # noqa: PLC0415 - heavy (see the top)

    if args.backend == "local" and not args.out.endswith(".parquet"):
        raise UsageError(f"--out {shorten(args.out)!r} should end in .parquet")
    paths, failures, notes = scan_report(args.videos)
    model = _load(args)
    with _backend(args) as backend:
        report = backend.embed(model, paths, args.out, num_frames=args.num_frames, pooling=args.pooling,
                               segment=args.segment, captions=INDEX_CAPTIONS if args.captions else None,
                               batch_size=args.batch_size, workers=args.workers, progress=_progress(args),
                               **_sampling(args))
        _report_run(args, backend)
    summary = {"out": report.out, "rows": report.rows, "videos": report.videos, "resumed": report.resumed,
               "failed": len(failures) + len(report.failed), "interrupted": report.interrupted}
    if getattr(report, "shards", None) is not None:  # the ray backend's folder of shards
        summary.update(shards=report.shards, errors=report.errors, run=report.summary.as_dict())
    if _json_mode(args):
        print(_json_line(summary))
    elif report.interrupted and not report.partial:
        print(f"{display(report.out)}: interrupted; the shards written so far are kept (run the same command again "
              "to continue)")
    elif report.interrupted:
        print(f"{display(report.partial)}: {report.rows} rows from {report.videos} videos so far (interrupted; "
              f"{display(report.out)} is untouched; run the same command again to continue)")
    else:
        print(f"{display(report.out)}: {report.rows} rows from {report.videos} videos"
              + (f" ({report.resumed} resumed from an interrupted run)" if report.resumed else ""))
    sys.stdout.flush()
    code = _report_failures(failures + report.failed, notes + report.notes)
    return EXIT_INTERRUPTED if report.interrupted else code


def cmd_eval(args) -> int:
    from .eval.runner import CAPTION_DECODING, evaluate, markdown_row  # noqa: PLC0415 - heavy (see the top)

    datasets = load_datasets(args.task, args.dataset, args.annotations, args.videos, args.split)
    model = _load(args)
    with _backend(args) as backend:
        out = evaluate(model, args.task, datasets, num_frames=args.num_frames, pooling=args.pooling,
                       templates=args.templates, limit=args.limit,
                       generation=dataclasses.replace(CAPTION_DECODING, method=args.method),
                       batch_size=args.batch_size, workers=args.workers, progress=_progress(args),
                       encode=backend.encode_clip_keys)
        _report_run(args, backend)
    if args.out:

        write_json_atomic(args.out, out, indent=1)
    if _json_mode(args):
        print(json.dumps(out))
    else:
        for r in out["results"]:
            print(json.dumps(r, indent=1))
            print(markdown_row(r))
        if "mean_over_splits" in out:
            print("mean over splits: " + ", ".join(f"{k} {v:.2f}" for k, v in out["mean_over_splits"].items()))
    missing = sum(r["protocol"]["videos_missing"] + r["protocol"]["videos_unreadable"] for r in out["results"])
    if missing:
        print(f"videococa eval: {missing} listed videos were missing or unreadable and left out (see the protocol)",
              file=sys.stderr)
    return EXIT_OK


def _dataset_items(task: str, args, annotations, *, split: str | None, purpose: str):
    datasets = load_datasets(task, args.dataset, annotations, args.videos, split, purpose=purpose)
    missing = sum(len(d.missing) for d in datasets)
    if missing:
        print(f"videococa {args.command}: {missing} listed videos are missing under --videos and left out",
              file=sys.stderr)
    return [it for d in datasets for it in d.items], datasets


def cmd_cache_features(args) -> int:
    from .train import cache_features  # noqa: PLC0415 - heavy (see the top)

    items, _ = _dataset_items(args.task, args, args.annotations, split=args.split, purpose="cache")
    model = _load(args)
    clips = list(dict.fromkeys((it.path, it.start, it.end) for it in items))
    with _backend(args) as backend:
        report = cache_features(model, clips, args.out, num_frames=args.num_frames, batch_size=args.batch_size,
                                workers=args.workers, progress=_progress(args), encode=backend.encode_clip_keys)
        _report_run(args, backend)
    summary = {"out": args.out, "cached": report.cached, "already_cached": report.skipped,
               "failed": len(report.failed)}
    print(json.dumps(summary) if _json_mode(args) else
          f"{args.out}: {report.cached} clips cached, {report.skipped} already there, {len(report.failed)} failed")
    for path, reason in report.failed:
        _say("skipped", path, reason)
    return EXIT_SOME_FAILED if report.failed else EXIT_OK


def cmd_finetune(args) -> int:
    from .eval.runner import evaluate_dataset  # noqa: PLC0415 - heavy (see the top)
    from .train import FeatureCache, FinetuneConfig, finetune, training_pairs  # noqa: PLC0415 - heavy (see the top)

    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is not None and args.device.startswith("cuda") and ":" not in args.device:
        args.device = f"cuda:{local_rank}"  # one GPU per torchrun process
    read_as, val_tasks = finetune_reading(args.task, args.dataset)
    train_items, _ = _dataset_items(read_as, args, args.train, split=args.split, purpose="train")
    val_sets = [ds for t in val_tasks for ds in _dataset_items(t, args, args.val, split=args.val_split,
                                                               purpose="val")[1]] if args.val else []
    model = _load(args)
    cache = FeatureCache(args.features, model)
    pairs = training_pairs(train_items, args.task)
    cfg = FinetuneConfig(task=args.task, epochs=args.epochs, batch_size=args.batch_size, accumulate=args.accumulate,
                         lr=args.lr, bf16=model.precision == "bf16", temporal=args.temporal,
                         temporal_layers=args.temporal_layers, temporal_scaled=args.temporal_scaled,
                         temporal_lr=args.temporal_lr, contrastive_weight=args.contrastive_weight,
                         caption_weight=args.caption_weight, train_text=args.train_text, seed=args.seed,
                         answer_head=args.answer_head, answer_only=args.answer_only,
                         extra={"train": args.train, "val": args.val, "dataset": args.dataset,
                                "val_sets": [ds.name for ds in val_sets]})

    def evaluate(m):
        out = {}
        for ds in val_sets:
            r = evaluate_dataset(m, ds, num_frames=cache.num_frames, cache=False, meteor=False,
                                 frame_tokens=cache.lookup)["metrics"]
            out.update({f"{ds.name} {k}": round(v, 3) for k, v in r.items() if isinstance(v, float)})
        return out

    info = finetune(model, cache, pairs, args.out, cfg, evaluate=evaluate if val_sets else None,
                    progress=_progress(args))
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(info) if _json_mode(args) else
              f"{args.out}: {info['step']} steps on {info['train_pairs']} pairs "
              f"({info['missing_from_cache']} not in the cache); per epoch: {json.dumps(info['history'])}")
    return EXIT_OK


def cmd_serve(args) -> int:
    from .serve.server import ModelChoice, demo_settings, serve  # noqa: PLC0415 - FastAPI and uvicorn load only here
    from .serve.settings import ServeSettings  # noqa: PLC0415 - as above

    opts = dict(host=args.host, port=args.port, api_key=args.api_key, no_auth=args.no_auth, read_only=args.read_only,
                cors_origins=args.cors_origin or [], max_upload_bytes=int(args.max_upload_mb * 2**20),
                scan_on_start=not args.no_scan)
    if args.demo:
        if args.library or args.index:
            raise UsageError("--demo serves the bundled synthetic library; do not give --library or --index with it")
        settings = demo_settings(**opts)
    else:
        if not args.library and not args.index:
            raise UsageError("give --library DIR (and optionally --index PATH), or --demo")
        index = args.index or os.path.join(args.library, ".videococa-index")
        settings = ServeSettings(library=args.library, index=index, **opts)
    choice = ModelChoice(args.model, args.pretrained, args.precision, args.device, args.num_frames, args.segment,
                         args.captions)
    return serve(settings, choice)


def cmd_demo(args) -> int:
    from .demo import run_demo  # noqa: PLC0415 - heavy (see the top)

    return run_demo(_load(args), num_frames=args.num_frames)


# --------------------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="videococa",
        description="Zero-shot video-text tasks with image-text CoCa models (VideoCoCa, Yan et al. 2022).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    _add_library_commands(sub)
    _add_text_commands(sub)
    _add_benchmark_commands(sub)
    _sub(sub, "demo", "a short end-to-end tour with the bundled model", "videococa demo", cmd_demo, run=False)
    _add_serve_command(sub)
    return parser


def _env(name: str, default=None):
    """A serve option's default from VIDEOCOCA_<NAME> (the flag's name in capitals, dashes as underscores)."""
    return os.environ.get("VIDEOCOCA_" + name.upper().replace("-", "_"), default)


def _add_serve_command(sub) -> None:
    p = _sub(sub, "serve", "serve a video library over HTTP: a JSON API and a web UI",
             "videococa serve --library ~/videos   (then open the printed URL)", cmd_serve, model=False, run=False)
    p.add_argument("--library", default=_env("library"), help="folder of videos to serve (searched recursively)")
    p.add_argument("--index", default=_env("index"), help="index directory (default: LIBRARY/.videococa-index; "
                   "built in the background when missing)")
    p.add_argument("--demo", action="store_true", help="serve the bundled synthetic demo library")
    p.add_argument("--host", default=_env("host", "127.0.0.1"), help="address to bind (default 127.0.0.1; any "
                   "other needs --api-key or --no-auth)")
    p.add_argument("--port", type=int, default=int(_env("port", 8000)), help="TCP port (default 8000; 0: a free one)")
    p.add_argument("--api-key", default=_env("api_key"), help="key clients must send (env VIDEOCOCA_API_KEY)")
    p.add_argument("--no-auth", action="store_true", default=bool(_env("no_auth")),
                   help="serve a non-loopback address without a key, on purpose")
    p.add_argument("--read-only", action="store_true", default=bool(_env("read_only")),
                   help="refuse uploads, rescans and deletions")
    p.add_argument("--cors-origin", action="append", help="allow this origin to call the API (repeatable)")
    p.add_argument("--max-upload-mb", type=float, default=float(_env("max_upload_mb", 2048)),
                   help="largest upload accepted, in MiB (default 2048)")
    p.add_argument("--no-scan", action="store_true", help="do not rescan the library when the server starts")
    g = p.add_argument_group("model and index (default: what the index was built with; a new one uses "
                             "videococa-tiny, 8 frames, 5 s segments)")
    g.add_argument("--model", default=_env("model"))
    g.add_argument("--pretrained", default=_env("pretrained"))
    g.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16"])
    g.add_argument("--device", default=_env("device", "cpu"))
    g.add_argument("--frames", "--num-frames", dest="num_frames", type=_num_frames, default=None,
                   help="frames per entry (a new index)")
    g.add_argument("--segment", type=_segment, default=None, help="seconds per entry (a new index; default 5)")
    g.add_argument("--captions", action="store_true", default=None,
                   help="caption every entry of a new index (hybrid text search)")
    p.set_defaults(own_signals=True)


def _add_library_commands(sub) -> None:
    """models, classify, index, search: a library of videos."""
    p = _sub(sub, "models", "list loadable models and pretrained tags", "videococa models", cmd_models,
             model=False, run=False)
    p.add_argument("--json", action="store_true", help="print JSON")

    p = _sub(sub, "classify", "zero-shot classification of videos into a label set",
             "videococa classify clip.mp4 videos/ --labels kinetics400 --top-k 5", cmd_classify)
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files or directories")
    p.add_argument("--labels", required=True, help="kinetics400, kinetics600, kinetics700, ucf101, hmdb51, charades, "
                   "or a file (one class per line; a Kinetics csv works too)")
    p.add_argument("--templates", default="clip", help="clip (the label set's CLIP templates), kinetics, ucf101, "
                   "single, or a file with one template per line containing {}")
    p.add_argument("--top-k", type=_top_k, default=5)
    p.add_argument("--multi-label", action="store_true", help="score classes independently (cosine similarity)")
    p.add_argument("--pooling", default="attentional", choices=["attentional", "mean"])
    _add_sampling_option(p)

    p = _sub(sub, "index", "build or update a searchable index of a video library",
             "videococa index ~/videos --index ~/videos.vcindex --segment 10", cmd_index)
    p.add_argument("videos", nargs="*", metavar="DIR|VIDEO", help="directories (searched recursively, links "
                   "followed) or files")
    p.add_argument("--index", required=True, help="index directory (created if missing)")
    p.add_argument("--repair", action="store_true", help="salvage a damaged index first (keeps every readable file; "
                   "the damaged database is kept beside it)")
    p.add_argument("--segment", type=_segment, default=None,
                   help="cut videos into windows of this many seconds, so search returns moments")
    p.add_argument("--captions", action="store_true", default=None,
                   help="also caption every entry (greedy, 20 tokens) when the index is created; text search then "
                   "matches caption words too (hybrid search)")
    p.add_argument("--from-parquet", default=None, metavar="SRC",
                   help="merge embeddings `videococa embed` wrote (its .parquet file, or the folder of shards of "
                        "--backend ray) instead of reading videos; resumable, and merging again adds only what is new")
    p.add_argument("--faiss", default=None, choices=["ivf", "ivfpq"],  # index.store.FAISS_KINDS (heavy to import)
                   help="search structure from 100k entries on: ivf (full vectors, the default) or ivfpq (16x smaller "
                        "codes, re-ranked exactly; for libraries past ~10M entries); recorded in the index, and "
                        "changing it rebuilds the FAISS file")
    _add_sampling_option(p, "kept per entry; an index keeps the sampling it was made with")
    _add_backend_options(p)

    p = _sub(sub, "search", "search an index by text or by an example video",
             'videococa search ~/videos.vcindex "a dog catching a frisbee" --top-k 10', cmd_search,
             model=False, run=False)
    p.add_argument("index", metavar="INDEX", help="index directory made by `videococa index`")
    p.add_argument("query", nargs="?", default=None, metavar="QUERY", help="text query")
    p.add_argument("--video", default=None, help="find videos like this one instead of a text query")
    p.add_argument("--top-k", type=_top_k, default=10)
    g = p.add_argument_group("model (default: the one the index was built with)")
    g.add_argument("--model", default=None)
    g.add_argument("--pretrained", default=None)
    g.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16"])
    g.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="JSON lines (the default when stdout is not a terminal)")


def _add_text_commands(sub) -> None:
    """caption, ask, embed: text and embeddings per video."""
    p = _sub(sub, "caption", "caption videos", "videococa caption clip.mp4 --method beam", cmd_caption)
    p.add_argument("videos", nargs="+", metavar="VIDEO")
    p.add_argument("--method", default="beam", choices=["beam", "greedy", "top_k", "top_p"])
    p.add_argument("--num-beams", type=_bounded_int(1, 64, "a number of beams"), default=6)
    p.add_argument("--max-len", type=_bounded_int(1, 1024, "a number of tokens"), default=30, help="new tokens at most")
    p.add_argument("--prompt", default=None, help="text the caption continues")
    p.add_argument("--seed", type=int, default=0, help="seed for top_k/top_p sampling")
    _add_sampling_option(p)
    _add_backend_options(p)

    p = _sub(sub, "ask", "answer a question about videos", 'videococa ask clip.mp4 "what colour is the car?"', cmd_ask)
    p.add_argument("args", nargs="+", metavar="VIDEO... QUESTION", help="one or more videos, then the question")

    p = _sub(sub, "embed", "write video embeddings and metadata to Parquet",
             "videococa embed videos/ --out embeddings.parquet --segment 10", cmd_embed)
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files or directories")
    p.add_argument("--out", required=True, help="output .parquet file (--backend ray: a folder of Parquet shards, "
                   "with _errors.parquet and _SUCCESS)")
    p.add_argument("--segment", type=_segment, default=None, help="one row per window of this many seconds")
    p.add_argument("--pooling", default="attentional", choices=["attentional", "mean"])
    p.add_argument("--captions", action="store_true", help="also a caption per row (greedy, 20 tokens: as an index "
                   "made with --captions keeps them, so `index --from-parquet` can use them)")
    _add_sampling_option(p, "written in a frame_times column")
    _add_backend_options(p)


def _add_temporal_args(p: argparse.ArgumentParser) -> None:
    """finetune's --temporal options."""
    p.add_argument("--temporal", default="none", choices=["none", "embedding", "transformer", "divided", "trajectory"],
                   help="embedding: a learned per-frame embedding; transformer: that plus a factorised temporal "
                        "self-attention; divided: that plus a spatial block after each temporal one, both given "
                        "each token's spatial position; trajectory: learned soft-argmax tracks over the patch grid "
                        "whose velocities make a motion vector added to every frame token (all leave the model "
                        "unchanged at step 0)")
    p.add_argument("--temporal-layers", type=_positive_int, default=1, help="blocks of --temporal transformer")
    p.add_argument("--temporal-scaled", action="store_true",
                   help="multiply the temporal blocks' residual outputs by each token's RMS, so they can grow to the "
                        "frozen tokens' scale within a short run (still the zero-shot model at step 0)")
    p.add_argument("--temporal-lr", type=_lr, default=None,
                   help="peak learning rate of the new temporal modules (default: --lr)")
    p.add_argument("--answer-only", action="store_true",
                   help="--task qa: the captioning loss on the answer's tokens only, not on the question prompt")
    p.add_argument("--answer-head", type=_weight, default=0.0, metavar="WEIGHT",
                   help="--task qa: add WEIGHT x an answer-classification loss on the pooled video embedding (a "
                        "training-only linear head over the training answers), which teaches the temporal modules "
                        "directly; with --temporal trajectory --temporal-lr 5e-3 it is what made motion learnable "
                        "(bench/RESULTS.md, issue 24)")


def _add_benchmark_commands(sub) -> None:
    """eval, cache-features, finetune: the standard benchmarks and finetuning."""
    splits = split_help()  # the splits each dataset takes, from the registry

    p = _sub(sub, "eval", "evaluate on a standard benchmark (or the synthetic one) with its official protocol",
             "videococa eval classify --dataset ucf101 --annotations classInd.txt testlist01.txt --videos UCF-101/",
             cmd_eval)
    p.add_argument("task", type=_task_name("retrieve"), choices=list(TASKS),
                   help="retrieval may also be written retrieve")
    p.add_argument("--dataset", required=True, help=dataset_help())
    p.add_argument("--annotations", nargs="+", required=True, metavar="PATH", help="the official annotation file(s)")
    p.add_argument("--videos", default=None, help="root of your local copy of the videos (searched recursively)")
    p.add_argument("--split", default=None, help=f"{splits}; default test (YouCook2: validate; UCF101/HMDB51: "
                   "every fold given, and their mean; MSVD without its mapping file: every clip, unsplit)")
    p.add_argument("--limit", type=_positive_int, default=None, help="evaluate the first N items only")
    p.add_argument("--pooling", default="attentional", choices=["attentional", "mean"])
    p.add_argument("--templates", default=None, help="classification prompt templates (default: the dataset's CLIP set)")
    p.add_argument("--method", default="beam", choices=["beam", "greedy"], help="caption decoding")
    p.add_argument("--out", default=None, help="also write the results JSON here")
    _add_backend_options(p)
    p = _sub(sub, "cache-features", "run the frozen encoder once per video and store its frame tokens",
             "videococa cache-features train.json --dataset msrvtt --videos MSRVTT/videos --out feats/",
             cmd_cache_features)
    p.add_argument("annotations", nargs="+", metavar="ANNOTATIONS", help="annotation file(s) of the videos to cache")
    p.add_argument("--dataset", required=True, help=f"annotation format (as in `videococa eval`): {dataset_help()}")
    p.add_argument("--task", default="caption", type=_task_name("retrieve"), choices=[t for t in TASKS if t != "moments"],
                   help="how to read the annotations (default caption)")
    p.add_argument("--videos", default=None, help="root of the videos")
    p.add_argument("--split", default=None, help=f"{splits}; default: every split in the files")
    p.add_argument("--out", required=True, help="cache directory (resumable)")
    _add_backend_options(p)
    _add_finetune_command(sub, splits)


def _add_finetune_command(sub, splits: str) -> None:
    p = _sub(sub, "finetune", "finetune the poolers and text decoder on cached features (encoder frozen)",
             "videococa finetune --task qa --dataset msrvtt-qa --train train.json --val val.json "
             "--videos MSRVTT/videos --features feats/ --out run/", cmd_finetune)
    p.add_argument("--task", required=True, type=_task_name("retrieval"), choices=["caption", "qa", "retrieval",
                                                                                 "retrieval+caption"],
                   help="caption, qa: captioning loss; retrieval: contrastive loss; retrieval+caption: both")
    p.add_argument("--dataset", required=True, help=f"annotation format (as in `videococa eval`): {dataset_help()}")
    p.add_argument("--train", nargs="+", required=True, metavar="ANNOTATIONS")
    p.add_argument("--val", nargs="+", default=None, metavar="ANNOTATIONS", help="evaluated after every epoch")
    p.add_argument("--split", default=None, help=f"split of --train: {splits}; default train")
    p.add_argument("--val-split", default=None, help="split of --val; default validate where the file has it, "
                   "else test")
    p.add_argument("--videos", default=None, help="root of the videos")
    p.add_argument("--features", required=True, help="cache made by `videococa cache-features`")
    p.add_argument("--out", required=True, help="run directory (re-running it resumes)")
    p.add_argument("--epochs", type=_positive_int, default=3)
    p.add_argument("--lr", type=_lr, default=1e-4)
    p.add_argument("--accumulate", type=_positive_int, default=1)
    _add_temporal_args(p)
    p.add_argument("--contrastive-weight", type=_weight, default=None,
                   help="weight of the contrastive loss (default: 1 for retrieval tasks, else 0)")
    p.add_argument("--caption-weight", type=_weight, default=None,
                   help="weight of the captioning loss (default: 2 for retrieval+caption, 0 for retrieval, else 1)")
    p.add_argument("--train-text", action="store_true", help="also train the text tower")
    p.add_argument("--seed", type=int, default=0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    batch, num_frames = getattr(args, "batch_size", None), getattr(args, "num_frames", None)
    if batch and num_frames and batch * num_frames > MAX_BATCH_FRAMES:
        parser.error(f"--batch-size {batch} x --frames {num_frames} holds {batch * num_frames} frames in memory at "
                     f"once; at most {MAX_BATCH_FRAMES}")
    try:
        with contextlib.nullcontext() if getattr(args, "own_signals", False) else catching_sigint():
            code = args.func(args)  # a server handles Ctrl-C itself (graceful shutdown)
            check()  # a Ctrl-C whose KeyboardInterrupt a finaliser swallowed after the last item
        return code
    except UsageError as exc:
        print(f"videococa {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except VideoDecodeError as exc:  # the one input of the command could not be read
        print(f"videococa {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_SOME_FAILED
    except VideoCoCaError as exc:  # a label set, index, model, weights file or option value that cannot be used
        # (any other exception, a ValueError included, is a bug in videococa and ends with its traceback)
        print(f"videococa {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("videococa: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. piped into `head`
        _silence_stdout()
        return EXIT_OK
    except OSError as exc:  # e.g. output to a full disk (> /dev/full), an output folder that vanished
        where = f" ({display(exc.filename)})" if getattr(exc, "filename", None) else ""
        stdout = exc.errno in (errno.ENOSPC, errno.EIO, errno.EDQUOT) and not where
        if stdout:
            _silence_stdout()
        print(f"videococa {args.command}: error: cannot write {'the output' if stdout else 'a file'}{where}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return EXIT_SOME_FAILED


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that Python's final flush of what could not be written raises nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def run() -> None:
    """Console entry point: `main`, then exit without waiting for reading threads stuck in a system call."""
    code = main()
    for t in threading.enumerate():
        if t is not threading.main_thread() and not t.daemon:
            t.join(timeout=0.5)
            if t.is_alive():
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
    raise SystemExit(code)


def _elapsed(t0: float) -> str:
    return f"{time.perf_counter() - t0:.1f}s"
