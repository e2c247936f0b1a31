"""The Ray backend: the local path's per-file steps as the stages of one streaming Ray Data pipeline.

    input paths -> decode: CPU tasks of `files_per_task` files running `video.loader.read_file` (PyAV, the
                   same sampling and `segment` windows as the local path) with the model's
                   `Preprocess.crop_only()`: frames cross the object store as uint8 at the model's input size
                -> encode: actors holding the model (`map_batches` with a class, `concurrency` replicas, a GPU
                   each when the cluster has them): normalise, then `tasks.batch.encode_clips`, which also
                   captions when asked
                -> write (`embed`): CPU tasks turning whole files into Parquet shards of the `embed` schema
                   (`tasks.embed.file_rows`) and unreadable files into an errors table
                -> the driver: progress, the errors table, a `_SUCCESS` marker and a summary of where the time went.

Only scheduling differs from the local path: the per-file functions are the same, so are the outputs
(tests/backends compare them). Every row of every stage is one whole file (its windows travel together), so
no batch boundary ever splits a file, and a shard holds whole files only.

The items of an annotation file (`eval`, `cache-features`: (path, start, end) clips) take the same two stages
with one row per clip (`encode_clip_keys`): `tasks.clipkeys.read_clip_key` in the decoding tasks,
`tasks.clipkeys.encode_read` in the model actors (embeddings and generative tokens, or the frozen encoder's
per-frame tokens), and the results stream back to the driver, which writes the feature cache or scores the
benchmark exactly as the local path does. Faults are handled as for files (a clip's position is its id).

Why not `ray.data.read_videos`: it decodes every frame of every file (decord) into one row per frame, at
the file's own resolution. VideoCoCa needs 8 frames per clip; our reader seeks to them (bench/RESULTS.md:
up to 4x less decoding than a full pass), crops them to the model's size in the decoding task, and keeps
our handling of hostile files (truncated, rotated, variable frame rate, no video stream) and our sampling,
so its results equal the local path's. Shipping full-resolution frames of every frame would multiply the
object store traffic by (frames in the file / 8) x (pixels / model pixels).

Faults (why the numbers):
- A decoding task whose worker dies (SIGKILL, the OOM killer, a lost node) is retried `task_retries` (3)
  times; Ray Data's default, retrying for ever, would loop on a file that crashes the decoder each time.
  Python errors are not retried: `read_file` already turns every error a file can cause into a FileIssue.
- Model actors are restarted without limit (a long job outlives many preemptions) but each call is retried
  only `task_retries` times, for the same reason.
- A batch that still fails is set aside: up to 1% of the batches (at least 3) may fail
  (`DataContext.max_errored_blocks`); more means something systematic (a broken node, a model that does not
  fit) and stops the job rather than burying it in the errors table. The set-aside files are then tried once
  more one file per batch, so one poison file costs only itself: what fails alone lands in the errors table.
- Shards are written to a temp name and renamed, named by a hash of the files they hold: a retried write
  rewrites the same shard with the same rows. The driver checks at the end that every file is in exactly
  one shard or in the errors table. A re-run (after the driver was killed, or to add files) skips every file
  already in a shard or in the errors table: it resumes by file, not by a count.

Ray is imported only here, inside functions, so `import videococa` and the CLI never pay for it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import pickle
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..deprecation import renamed_keywords
from ..errors import BackendError, OptionError
from ..files import FileLock, write_json_atomic
from ..models.decoding import GenerationConfig
from ..models.videococa import Pooling, VideoCoCa
from ..paths import display
from ..tasks.batch import EncodedClip, encode_clips
from ..tasks.clipkeys import ClipKey, ClipOutput, KeyedBatch, check_output, encode_read, read_clip_key
from ..tasks.embed import EmbedReport, embed_schema, file_rows, rows_table
from ..video.decode import one_decoder_thread_here
from ..video.loader import FileIssue, read_file
from ..video.sampling import Sampling
from ..video.transforms import Preprocess
from .options import RayOptions

SUCCESS = "_SUCCESS"
"""Written last, when every input file is in a shard or in the errors table: a JSON summary of the run."""
ERRORS = "_errors.parquet"
"""The errors table of a finished run: path, path_bytes, reason (one row per file that could not be embedded)."""
ERRORS_DIR = "_errors"
"""Per-shard parts of the errors table while a run goes on (merged into ERRORS at the end)."""
JOB = "_job.json"
"""The settings the shards were made with (the schema's metadata); a re-run with others is refused."""
Reader = Callable[..., "list | FileIssue"]
"""How one file is read: `video.loader.read_file`'s signature (tests pass hostile ones)."""

_STAGES = ("decode", "encode", "write")
_log = logging.getLogger(__name__)


def _ray():
    try:
        import ray  # noqa: PLC0415 - Ray loads only when this backend runs (import videococa stays light)
        import ray.data  # noqa: PLC0415 - as above
    except ImportError:
        raise BackendError("the ray backend needs Ray Data: pip install 'videococa[ray]'") from None
    return ray


def _node() -> str:
    return _ray().get_runtime_context().get_node_id()


def _objects(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)  # bytes and str stay Python objects (Arrow binary / string)
    out[:] = values
    return out


# --------------------------------------------------------------------------- the stages (run on workers)
def _decode(batch: dict, *, reader: Reader, num_frames: int, segment: float | None,
            preprocess: Preprocess, threads: int, sampling: Sampling = "uniform") -> dict:
    """Decoding task: each file, whole, read by `reader` (uint8 frames at the model's size), one row per file.
    One FFmpeg thread per task, as in the local loader's reading threads: parallelism is across files, and on a
    damaged file FFmpeg's frame threads conceal errors differently, so the frames would differ from the local path's."""
    torch.set_num_threads(threads)
    one_decoder_thread_here()
    node = _node()
    out: dict[str, list] = {"path_bytes": [], "payload": [], "reason": [], "decode_s": [], "decode_node": []}
    for name in batch["path_bytes"]:
        t = time.perf_counter()
        got = reader(os.fsdecode(name), num_frames, preprocess=preprocess, segment=segment, sampling=sampling)
        if isinstance(got, FileIssue):
            payload, reason = b"", got.reason or "unreadable"
        else:
            frames = np.stack([c.frames.numpy() for c in got])  # (W, T, 3, S, S) uint8
            meta = [dataclasses.replace(c, frames=torch.empty(0)) for c in got]
            payload, reason = pickle.dumps((meta, frames), protocol=5), ""
        for k, v in (("path_bytes", bytes(name)), ("payload", payload), ("reason", reason),
                     ("decode_s", time.perf_counter() - t), ("decode_node", node)):
            out[k].append(v)
    return {k: (np.asarray(v, dtype=np.float64) if k == "decode_s" else _objects(v)) for k, v in out.items()}


def _cpu(e: EncodedClip) -> EncodedClip:
    return dataclasses.replace(e, embedding=e.embedding.float().cpu(),
                               video_tokens=None if e.video_tokens is None else e.video_tokens.float().cpu())


class _Replica:
    """Model actor: one replica of the driver's model (from the object store), on a GPU when it holds one;
    `kwargs` are what its per-batch step takes besides the model."""

    def __init__(self, model_box: list, *, device: str, threads: int, **kwargs):
        torch.set_num_threads(threads)
        model = _ray().get(model_box[0])
        self.model = model.to(device) if device != "cpu" else model
        self.normalize = model.preprocess.normalize
        self.kwargs = kwargs
        self.node = _node()


class _Encode(_Replica):
    """Model actor for whole files: `tasks.batch.encode_clips` (kwargs: pooling, return_tokens, captions, prompt)."""

    def __call__(self, batch: dict) -> dict:
        t0 = time.perf_counter()
        clips, owner = [], []
        for i, (payload, reason) in enumerate(zip(batch["payload"], batch["reason"])):
            if reason:
                continue
            meta, frames = pickle.loads(payload)
            for k, c in enumerate(meta):  # the same float input as reading with model.preprocess gives
                clips.append(dataclasses.replace(c, frames=self.normalize(torch.from_numpy(frames[k]))))
                owner.append(i)
        per_file: list[list[EncodedClip]] = [[] for _ in batch["reason"]]
        for i, e in zip(owner, encode_clips(self.model, clips, **self.kwargs)):
            per_file[i].append(_cpu(e))
        secs = time.perf_counter() - t0
        n = max(1, len(clips))
        return {**batch, "payload": _objects([pickle.dumps(p, protocol=5) if p else b"" for p in per_file]),
                "encode_s": np.asarray([secs * len(p) / n for p in per_file], dtype=np.float64),
                "encode_node": _objects([self.node] * len(per_file))}


def _decode_keys(batch: dict, *, num_frames: int, preprocess: Preprocess, threads: int) -> dict:
    """Decoding task for clips of annotation items: `tasks.clipkeys.read_clip_key` on each (path, start, end) key,
    uint8 frames at the model's size, one row per clip (`payload` empty where the clip could not be read).
    One FFmpeg thread, like `_decode`."""
    torch.set_num_threads(threads)
    one_decoder_thread_here()
    node = _node()
    payload, reason, secs = [], [], []
    for key in batch["key"]:
        t = time.perf_counter()
        got = read_clip_key(pickle.loads(key), num_frames, preprocess)
        read = isinstance(got, torch.Tensor)
        payload.append(pickle.dumps(got.numpy(), protocol=5) if read else b"")  # (T, 3, S, S) uint8
        reason.append("" if read else got)
        secs.append(time.perf_counter() - t)
    return {"pos": batch["pos"], "key": batch["key"], "payload": _objects(payload), "reason": _objects(reason),
            "decode_s": np.asarray(secs, dtype=np.float64), "decode_node": _objects([node] * len(secs))}


class _EncodeKeys(_Replica):
    """Model actor for clips of annotation items: `tasks.clipkeys.encode_read` over the batch's read clips (kwargs:
    output, pooling, return_tokens); each row's results as a dict of CPU tensors."""

    def __call__(self, batch: dict) -> dict:
        t0 = time.perf_counter()
        n = len(batch["pos"])
        got = [self.normalize(torch.from_numpy(pickle.loads(p))) if len(p) else r  # as read with model.preprocess
               for p, r in zip(batch["payload"], batch["reason"])]
        done = encode_read(self.model, range(n), got, **self.kwargs)
        per_row: list[bytes] = [b""] * n
        for j, k in enumerate(done.ix):
            row = {name: None if t is None else t[j].clone() for name, t in (
                ("embedding", done.embeddings), ("video_tokens", done.video_tokens), ("frame_tokens", done.frame_tokens))}
            per_row[k] = pickle.dumps(row, protocol=5)
        secs = time.perf_counter() - t0
        return {**batch, "payload": _objects(per_row), "encode_s": np.full(n, secs / max(1, n)),
                "encode_node": _objects([self.node] * n)}


def _keyed_batch(batch: dict) -> KeyedBatch:
    """The driver's view of a batch of `_EncodeKeys` rows: results stacked in row order, failures with reasons."""
    out = KeyedBatch([int(i) for i, p in zip(batch["pos"], batch["payload"]) if len(p)])
    out.failed = [(int(i), str(r)) for i, p, r in zip(batch["pos"], batch["payload"], batch["reason"]) if not len(p)]
    rows = [pickle.loads(p) for p in batch["payload"] if len(p)]
    for name, attr in (("embedding", "embeddings"), ("video_tokens", "video_tokens"), ("frame_tokens", "frame_tokens")):
        if rows and rows[0][name] is not None:
            setattr(out, attr, torch.stack([r[name] for r in rows]))
    return out


def _write_atomic(table, path: Path) -> None:
    """Write `table` to `path` through a hidden temp name (readers skip names starting with '.')."""
    import pyarrow.parquet as pq  # noqa: PLC0415 - pyarrow loads with the first table written

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def errors_table(rows: list[tuple[bytes, str]], metadata: dict | None = None):
    """(path_bytes, reason) pairs as the errors table: path (text), path_bytes, reason."""
    import pyarrow as pa  # noqa: PLC0415 - pyarrow loads with the first table written

    schema = pa.schema([("path", pa.string()), ("path_bytes", pa.binary()), ("reason", pa.string())],
                       metadata=metadata)
    return pa.Table.from_arrays([pa.array([b.decode("utf-8", "backslashreplace") for b, _ in rows], pa.string()),
                                 pa.array([b for b, _ in rows], pa.binary()),
                                 pa.array([r for _, r in rows], pa.string())], schema=schema)


def shard_name(names: Sequence[bytes]) -> str:
    """A shard's file name, from the files it holds: a retried write of the same files rewrites the same shard."""
    digest = hashlib.sha1(b"\0".join(sorted(names))).hexdigest()[:24]
    return f"part-{digest}.parquet"


def _write(batch: dict, *, out: str, schema) -> dict:
    """Writing task: the batch's files as one shard (failures into `_errors/`), and a summary row per file."""
    t0 = time.perf_counter()
    names = [bytes(b) for b in batch["path_bytes"]]
    rows: list[tuple] = []
    failed: list[tuple[bytes, str]] = []
    counts, notes = [], []
    for name, payload, reason in zip(names, batch["payload"], batch["reason"]):
        said: list[FileIssue] = []
        if reason:
            failed.append((name, reason))
            counts.append(0)
        else:
            mine = file_rows(pickle.loads(payload), said)
            rows += mine
            counts.append(len(mine))
        notes.append(said[0].reason if said else "")
    shard = shard_name(names)
    if failed:  # before the shard: a shard on disk means its failures are recorded too
        _write_atomic(errors_table(failed, schema.metadata), Path(out) / ERRORS_DIR / shard)
    if rows:
        _write_atomic(rows_table(rows, schema), Path(out) / shard)
    secs = time.perf_counter() - t0
    keep = ("path_bytes", "reason", "decode_s", "encode_s", "decode_node", "encode_node")
    return {**{k: batch[k] for k in keep}, "rows": np.asarray(counts, dtype=np.int64), "note": _objects(notes),
            "write_s": np.full(len(names), secs / max(1, len(names))), "write_node": _objects([_node()] * len(names))}


# --------------------------------------------------------------------------- the run's record
@dataclass
class StageTime:
    """One stage's work, summed over its workers."""

    seconds: float = 0.0
    """Busy seconds, all workers together."""
    files: int = 0
    """Files it handled."""
    nodes: set = field(default_factory=set)
    """Ray node ids it ran on."""

    @property
    def per_second(self) -> float:
        """Files per busy second of one worker."""
        return self.files / self.seconds if self.seconds else 0.0


@dataclass
class RunSummary:
    """Where a Ray run's time went."""

    items: int = 0
    """Input files."""
    resumed: int = 0
    """Files an earlier run had already done (in a shard or in the errors table)."""
    done: int = 0
    """Files this run encoded."""
    failed: int = 0
    """Files this run could not encode (now in the errors table)."""
    rows: int = 0
    """Rows (videos or windows) this run wrote."""
    retried_alone: int = 0
    """Files whose batch failed even after retries, tried again one file per batch."""
    startup_s: float = 0.0
    """Connecting to the cluster and shipping the model."""
    pipeline_s: float = 0.0
    """From the pipeline's start to its last file (actors starting included)."""
    finish_s: float = 0.0
    """Checking the shards, the errors table and the done marker."""
    stages: dict[str, StageTime] = field(default_factory=lambda: {s: StageTime() for s in _STAGES})
    """Busy time per stage."""
    replicas: int = 0
    """Model actors."""
    device: str = "cpu"
    """Where the actors run the model."""

    def add(self, batch: dict) -> None:
        n = len(batch["reason"])
        for s in _STAGES:
            if f"{s}_s" in batch:
                st = self.stages[s]
                st.seconds += float(np.sum(batch[f"{s}_s"]))
                st.files += n
                st.nodes.update(batch[f"{s}_node"])

    @property
    def nodes(self) -> int:
        """Ray nodes that did work."""
        return len(set().union(*(s.nodes for s in self.stages.values())))

    def as_dict(self) -> dict:
        busy = sum(s.seconds for s in self.stages.values()) or 1.0
        return {"items": self.items, "resumed": self.resumed, "done": self.done, "failed": self.failed,
                "rows": self.rows, "retried_alone": self.retried_alone, "replicas": self.replicas,
                "device": self.device, "nodes": self.nodes, "startup_s": round(self.startup_s, 3),
                "pipeline_s": round(self.pipeline_s, 3), "finish_s": round(self.finish_s, 3),
                "videos_per_s": round(self.done / self.pipeline_s, 3) if self.pipeline_s else 0.0,
                "stages": {k: {"busy_s": round(s.seconds, 3), "files": s.files, "videos_per_s_per_worker":
                               round(s.per_second, 3), "share": round(s.seconds / busy, 3)}
                           for k, s in self.stages.items() if s.files}}

    def lines(self) -> list[str]:
        """The summary in words, a line each."""
        d = self.as_dict()
        out = [f"{self.done} files encoded, {self.failed} failed, {self.resumed} done before; {self.rows} rows; "
               f"{self.replicas} model replicas on {self.device}, {self.nodes} nodes",
               f"time: {d['startup_s']:.1f} s starting, {d['pipeline_s']:.1f} s pipeline "
               f"({d['videos_per_s']:.2f} videos/s), {d['finish_s']:.1f} s finishing"]
        for k, s in d["stages"].items():
            out.append(f"  {k:<6} {s['busy_s']:8.1f} busy s ({s['share']:.0%} of the work), "
                       f"{s['videos_per_s_per_worker']:.2f} videos/s per worker")
        if self.retried_alone:
            out.append(f"{self.retried_alone} files were tried again alone after their batch failed")
        return out


@dataclass
class RayEmbedReport(EmbedReport):
    """What an `embed` run on Ray wrote: `out` is a folder of Parquet shards."""

    shards: int = 0
    """Shard files in `out`."""
    errors: str = ""
    """The errors table (`out/_errors.parquet`), written when the run completes."""
    summary: RunSummary = field(default_factory=RunSummary)
    """Where the time went."""


@contextlib.contextmanager
def _data_context(**values) -> Iterator[None]:
    """Set DataContext attributes for the datasets made inside (each dataset keeps a copy of the context)."""
    ctx = _ray().data.DataContext.get_current()
    order = values.pop("preserve_order", ctx.execution_options.preserve_order)
    old = {k: getattr(ctx, k) for k in values}
    old_order = ctx.execution_options.preserve_order
    try:
        for k, v in values.items():
            setattr(ctx, k, v)
        ctx.execution_options.preserve_order = order
        yield
    finally:
        for k, v in old.items():
            setattr(ctx, k, v)
        ctx.execution_options.preserve_order = old_order


# --------------------------------------------------------------------------- the driver
class RayBackend:
    """Batch work on a Ray cluster (joined or started on first use); `close()` leaves what it joined or stops
    what it started. `reader` reads one file (default `video.loader.read_file`)."""

    name = "ray"

    def __init__(self, options: RayOptions | None = None, *, reader: Reader = read_file):
        self.options = options or RayOptions()
        self.options.check()
        self.reader = reader
        self._ray = None
        self._joined = False
        self._models: dict[int, tuple[VideoCoCa, object]] = {}
        self.last_summary: RunSummary | None = None
        """The summary of the latest run (`embed` or `encode_files`)."""

    # ------------------------------------------------------------------ cluster
    def _connect(self):
        if self._ray is not None:
            return self._ray
        ray = _ray()
        if not ray.is_initialized():
            kwargs: dict = {"address": self.options.address, "logging_level": logging.WARNING}
            if self.options.address is None and not os.environ.get("RAY_ADDRESS"):
                # a runtime for this run only, never a cluster Ray happens to find (`ray start` leaves its
                # address in a file that outlives it): joining one takes --ray-address auto
                kwargs.update(address="local", include_dashboard=False)
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = self.options.address or os.environ.get("RAY_ADDRESS") or "this machine"
                raise BackendError(f"cannot start or reach the Ray cluster at {where}: {exc}") from None
            self._joined = True
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # our own progress bar and summary instead
        self._ray = ray
        return ray

    def close(self) -> None:
        """Disconnect from (or stop) the Ray runtime this backend started; one the caller started stays."""
        if self._joined and self._ray is not None:
            self._ray.shutdown()
        self._ray, self._joined, self._models = None, False, {}

    def __enter__(self) -> "RayBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _layout(self, ray) -> tuple[int, float, str]:
        """(replicas, GPUs each, device) from the options and the cluster's resources."""
        res = ray.cluster_resources()
        o = self.options
        gpus = o.gpus_per_actor if o.gpus_per_actor is not None else (1.0 if res.get("GPU", 0) else 0.0)
        if o.actors:
            actors = o.actors
        elif gpus:
            actors = max(1, int(res.get("GPU", 0) // gpus))
        else:
            actors = max(1, int(res.get("CPU", 1) // (2 * max(o.cpus_per_actor, 0.5))))
        return actors, gpus, "cuda" if gpus else "cpu"

    def _model_ref(self, ray, model: VideoCoCa):
        """The model in the object store, put once per backend (actors take it from there)."""
        if id(model) not in self._models:
            ship = model if model.device.type == "cpu" else copy.deepcopy(model).to("cpu")
            self._models[id(model)] = (model, ray.put(ship))
        return self._models[id(model)][1]

    def _pipeline(self, model: VideoCoCa, rows: list[dict], *, per_task: int, batch_size: int, summary: RunSummary,
                  decode: Callable, decode_kwargs: dict, actor: type, actor_kwargs: dict):
        """decode -> encode over `rows`: `decode` in CPU tasks of `per_task` rows (frames cropped to the model's
        size), then the `actor` class holding the model, `batch_size` rows per call."""
        ray = self._connect()
        o = self.options
        actors, gpus, device = self._layout(ray)
        summary.replicas, summary.device = actors, device
        if device != "cpu" and model.precision == "fp32":
            _log.warning("the model runs in fp32 on the GPUs; load it with precision='bf16' (--precision bf16) "
                         "for about twice the throughput")
        box = [self._model_ref(ray, model)]  # in a list: Ray passes it on as a reference, not the model
        ds = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / per_task)))
        with warnings.catch_warnings():
            # Ray 2.60 deprecates passing task options (max_retries, max_restarts, ...) through map_batches'
            # **ray_remote_args but names no replacement for them yet; they still apply (revisit with Ray 2.64)
            warnings.simplefilter("ignore", DeprecationWarning)
            ds = ds.map_batches(decode, batch_size=per_task, batch_format="numpy",
                                fn_kwargs=dict(decode_kwargs, preprocess=model.preprocess.crop_only(),
                                               threads=max(1, math.ceil(o.decode_cpus))),
                                num_cpus=o.decode_cpus, max_retries=o.task_retries, retry_exceptions=False)
            return ds.map_batches(actor, batch_size=batch_size, batch_format="numpy",
                                  fn_constructor_kwargs=dict(actor_kwargs, model_box=box, device=device,
                                                             threads=max(1, math.ceil(o.cpus_per_actor))),
                                  compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=o.cpus_per_actor,
                                  num_gpus=gpus or None, max_restarts=-1, max_task_retries=o.task_retries)

    def _dataset(self, model: VideoCoCa, names: list[bytes], *, files_per_task: int, batch_size: int,
                 num_frames: int, segment: float | None, pooling: Pooling, return_tokens: bool,
                 captions: GenerationConfig | None, summary: RunSummary, prompt: str | None = None,
                 sampling: Sampling = "uniform"):
        """decode -> encode, one row per file (`names`: absolute paths as bytes)."""
        return self._pipeline(model, [{"path_bytes": n} for n in names], per_task=files_per_task,
                              batch_size=batch_size, summary=summary, decode=_decode,
                              decode_kwargs=dict(reader=self.reader, num_frames=num_frames, segment=segment,
                                                 sampling=sampling),
                              actor=_Encode, actor_kwargs=dict(pooling=pooling, return_tokens=return_tokens,
                                                               captions=captions, prompt=prompt))

    @staticmethod
    def _tolerated(names: list[bytes], files_per_task: int) -> int:
        """Batches that may fail after their retries before the job stops (see the module docstring)."""
        return max(3, math.ceil(len(names) / files_per_task / 100))

    def _passes(self, names: list[bytes], run: Callable[..., Iterator], summary: RunSummary):
        """`run(names, files_per_task, tolerated, seen)` (a generator: what it yields is passed on), then once more
        one file per batch for the files whose batch failed after its retries; returns those that failed alone."""
        fpt = self.options.files_per_task
        tolerated = self._tolerated(names, fpt)
        seen: set[bytes] = set()
        try:
            yield from run(names, fpt, tolerated, seen)
        except Exception as exc:  # noqa: BLE001 - only Ray's own errors are reworded; the rest pass through
            if not isinstance(exc, _ray().exceptions.RayError):
                raise
            raise BackendError(f"the Ray job stopped: more than {tolerated} batches of files failed even after "
                               f"{self.options.task_retries} retries each, which points at the cluster or the model "
                               "rather than at files (a node that keeps dying, a model that does not fit in a "
                               "worker's memory); what was written is kept and a re-run resumes. "
                               f"Last error: {type(exc).__name__}: {str(exc)[:500]}") from None
        missing = [n for n in names if n not in seen]
        if missing and fpt > 1:  # (with one file per batch, each was already tried alone)
            summary.retried_alone += len(missing)
            yield from run(missing, 1, len(missing), seen)
        return [n for n in missing if n not in seen]

    # ------------------------------------------------------------------ streaming (index, caption)
    @renamed_keywords(frames="num_frames")
    def encode_files(self, model: VideoCoCa, paths: Sequence[str | os.PathLike], *, num_frames: int = 8,
                     batch_size: int = 4, workers: int = 2, pooling: Pooling = "attentional",
                     segment: float | None = None, return_tokens: bool = False,
                     captions: GenerationConfig | None = None, prompt: str | None = None,
                     keep_frames: bool = False, progress: bool = False, desc: str = "encode",
                     sampling: Sampling = "uniform") -> Iterator[list[EncodedClip] | FileIssue]:
        """`tasks.batch.encode_files` on the cluster: each file's results (or its FileIssue), in input order
        (files whose batch failed and were retried alone come at the end). `workers` is unused: the cluster's
        CPUs decode (with `sampling`, as `read_video` does)."""
        if keep_frames:
            raise OptionError("keep_frames is not available with the ray backend: frames stay on the workers")
        given: dict[bytes, str] = {}
        for p in paths:
            given.setdefault(os.fsencode(os.path.abspath(p)), str(p))
        names = list(given)
        if not names:
            return
        summary = self.last_summary = RunSummary(items=len(names))
        t0 = time.perf_counter()

        def run(part: list[bytes], fpt: int, tolerated: int, seen: set[bytes]):
            with _data_context(max_errored_blocks=tolerated, preserve_order=True, enable_progress_bars=False):
                ds = self._dataset(model, part, files_per_task=fpt, batch_size=batch_size, num_frames=num_frames,
                                   segment=segment, pooling=pooling, return_tokens=return_tokens, captions=captions,
                                   prompt=prompt, summary=summary, sampling=sampling)
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                summary.add(batch)
                for name, payload, reason in zip(batch["path_bytes"], batch["payload"], batch["reason"]):
                    name = bytes(name)
                    seen.add(name)
                    path = given[name]
                    if reason:
                        summary.failed += 1
                        yield FileIssue(path, reason)
                    else:
                        items = [dataclasses.replace(e, clip=dataclasses.replace(e.clip, path=path))
                                 for e in pickle.loads(payload)]
                        summary.done += 1
                        summary.rows += len(items)
                        yield items

        with tqdm(total=len(names), desc=desc, unit="video", disable=not progress, leave=False) as bar:
            passes = self._passes(names, run, summary)
            while True:
                try:
                    item = next(passes)
                except StopIteration as stop:
                    lost = stop.value
                    break
                bar.update()
                yield item
        summary.pipeline_s = time.perf_counter() - t0
        summary.failed += len(lost)
        for name in lost:
            yield FileIssue(given[name], _lost_reason(given[name], self.options.task_retries))

    # ------------------------------------------------------------------ clips of annotation items (eval, cache-features)
    def encode_clip_keys(self, model: VideoCoCa, keys: Sequence[ClipKey], *, num_frames: int = 8,
                         output: ClipOutput = "video", pooling: Pooling = "attentional", return_tokens: bool = False,
                         batch_size: int = 8, workers: int = 2, progress: bool = False) -> Iterator[KeyedBatch]:
        """`tasks.clipkeys.encode_clip_keys` on the cluster: the same per-clip steps (`read_clip_key` in CPU tasks,
        `encode_read` in the model actors), one KeyedBatch per batch that comes back, in input order (clips whose
        batch failed and were retried alone come at the end). Every position comes back once, encoded or failed;
        a reason names the path as given. `workers` is unused: the cluster's CPUs decode."""
        check_output(output)
        if not keys:
            return
        given = [str(k[0]) for k in keys]
        absolute = [os.path.abspath(p) for p in given]  # workers do not share our working directory
        summary = self.last_summary = RunSummary(items=len(keys))
        t0 = time.perf_counter()

        def as_given(pos: int, reason: str) -> str:
            return reason if absolute[pos] == given[pos] else reason.replace(display(absolute[pos]), display(given[pos]))

        def run(part: list[int], per_task: int, tolerated: int, seen: set[int]):
            rows = [{"pos": i, "key": pickle.dumps((absolute[i], *keys[i][1:]))} for i in part]
            with _data_context(max_errored_blocks=tolerated, preserve_order=True, enable_progress_bars=False):
                ds = self._pipeline(model, rows, per_task=per_task, batch_size=batch_size, summary=summary,
                                    decode=_decode_keys, decode_kwargs=dict(num_frames=num_frames), actor=_EncodeKeys,
                                    actor_kwargs=dict(output=output, pooling=pooling, return_tokens=return_tokens))
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                summary.add(batch)
                out = _keyed_batch(batch)
                out.failed = [(i, as_given(i, r)) for i, r in out.failed]
                seen.update(out.ix, (i for i, _ in out.failed))
                summary.done, summary.failed = summary.done + len(out.ix), summary.failed + len(out.failed)
                summary.rows += len(out.ix)
                bar.update(len(batch["pos"]))
                yield out

        with tqdm(total=len(keys), desc="encode", unit="clip", disable=not progress, leave=False) as bar:
            lost = yield from self._passes(list(range(len(keys))), run, summary)
        summary.pipeline_s = time.perf_counter() - t0
        if lost:
            summary.failed += len(lost)
            yield KeyedBatch([], failed=[(i, _lost_reason(given[i], self.options.task_retries)) for i in lost])

    # ------------------------------------------------------------------ embed: shards on disk
    @renamed_keywords(frames="num_frames")
    def embed(self, model: VideoCoCa, paths: Sequence[str | os.PathLike], out: str | os.PathLike, *,
              num_frames: int = 8, pooling: Pooling = "attentional", segment: float | None = None,
              captions: GenerationConfig | None = None, batch_size: int = 4, workers: int = 2,
              row_group: int = 256, progress: bool = False, sampling: Sampling = "uniform") -> RayEmbedReport:
        """Embed each video (or `segment`-second window) into Parquet shards in the folder `out`: the schema and
        metadata of `tasks.embed.embed_to_parquet`, absolute paths (workers do not share our working directory).

        Unreadable files go to `out/_errors.parquet`; `out/_SUCCESS` is written when every file is accounted
        for. Re-running with the same settings skips the files already done, so a run whose driver was killed
        resumes; other settings are refused. `workers` and `row_group` are unused (the cluster decodes;
        a shard is one row group)."""
        t0 = time.perf_counter()
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise OptionError(f"--out {display(out)!r} is a file; the ray backend writes a folder of Parquet shards")
        schema = embed_schema(model, num_frames, pooling, segment, captions, sampling)
        names = list(dict.fromkeys(os.fsencode(os.path.abspath(p)) for p in paths))
        out.mkdir(parents=True, exist_ok=True)
        lock = FileLock(out / "_job.lock")
        if not lock.acquire(blocking=False):
            raise BackendError(f"another run (pid {lock.holder() or 'unknown'}) is writing {display(out)!r}")
        report = RayEmbedReport(str(out), errors=str(out / ERRORS))
        summary = self.last_summary = report.summary
        summary.items = len(names)
        try:
            _check_job(out, schema)
            for tmp in out.glob(".*.tmp"):  # left by writers killed mid-write (no writer runs now: we hold the lock)
                tmp.unlink(missing_ok=True)
            for tmp in (out / ERRORS_DIR).glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
            done = _recorded(out)
            todo = [n for n in names if n not in done]
            summary.resumed = report.resumed = len(names) - len(todo)
            summary.startup_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            try:
                if todo:
                    self._embed_passes(model, todo, out, schema, report, dict(
                        batch_size=batch_size, num_frames=num_frames, segment=segment, pooling=pooling,
                        return_tokens=False, captions=captions, sampling=sampling), progress)
            except KeyboardInterrupt:
                report.interrupted = True
            summary.pipeline_s = time.perf_counter() - t1
            if not report.interrupted:
                t2 = time.perf_counter()
                _finish(out, names, report, schema)
                summary.finish_s = time.perf_counter() - t2
        finally:
            lock.release()
        return report

    def _embed_passes(self, model, todo: list[bytes], out: Path, schema, report: RayEmbedReport, kw: dict,
                      progress: bool) -> None:
        summary = report.summary
        bar = tqdm(total=len(todo), desc="embed", unit="video", disable=not progress, leave=False)

        def run(part: list[bytes], fpt: int, tolerated: int, seen: set[bytes]):
            with _data_context(max_errored_blocks=tolerated, enable_progress_bars=False):
                ds = self._dataset(model, part, files_per_task=fpt, summary=summary, **kw)
                with warnings.catch_warnings():  # as in _dataset
                    warnings.simplefilter("ignore", DeprecationWarning)
                    ds = ds.map_batches(_write, batch_size=self.options.files_per_shard, batch_format="numpy",
                                        fn_kwargs=dict(out=str(out), schema=schema), num_cpus=0.25,
                                        max_retries=self.options.task_retries, retry_exceptions=False)
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                summary.add(batch)
                for name, reason, rows, note in zip(batch["path_bytes"], batch["reason"], batch["rows"],
                                                    batch["note"]):
                    seen.add(bytes(name))
                    if reason:
                        summary.failed += 1
                    else:
                        summary.done += 1
                        summary.rows += int(rows)
                    if note:
                        report.notes.append(FileIssue(os.fsdecode(bytes(name)), note))
                yield len(batch["path_bytes"])

        with tqdm(total=len(todo), desc="embed", unit="video", disable=not progress, leave=False) as bar:
            passes = self._passes(todo, run, summary)
            while True:
                try:
                    bar.update(next(passes))
                except StopIteration as stop:
                    lost = stop.value
                    break
        if lost:  # failed alone as well: recorded by the driver, so the run completes
            rows = [(n, _lost_reason(os.fsdecode(n), self.options.task_retries)) for n in lost]
            _write_atomic(errors_table(rows, schema.metadata), out / ERRORS_DIR / shard_name(lost))
            summary.failed += len(lost)


def _lost_reason(path: str, retries: int) -> str:
    return (f"{display(path)!r}: failed {retries + 1} times in a row, the last times alone: the worker died reading "
            "or encoding it (a decoder crash, or more memory than a worker has) or hit an error the driver's log "
            "names")


def _check_job(out: Path, schema) -> None:
    """Record the run's settings in `out/_job.json`, or refuse a folder holding shards made with others."""
    settings = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    settings["columns"] = ",".join(schema.names)
    job = out / JOB
    if job.is_file():
        try:
            old = json.loads(job.read_text())
        except (OSError, ValueError):
            old = None
        if old != settings:
            diff = sorted(k for k in set(settings) | set(old or {}) if (old or {}).get(k) != settings.get(k))
            raise BackendError(f"{display(out)!r} holds shards made with other settings ({', '.join(diff)} differ); "
                               "give another --out, or remove that folder to start over")
    elif any(out.glob("part-*.parquet")):
        raise BackendError(f"{display(out)!r} holds Parquet shards but no {JOB}; give another --out")
    else:
        write_json_atomic(job, settings, indent=1)


def _shard_ids(out: Path) -> dict[bytes, list[Path]]:
    """path_bytes -> the shards holding rows of that file."""
    import pyarrow.parquet as pq  # noqa: PLC0415 - pyarrow loads when shards are read

    where: dict[bytes, list[Path]] = {}
    for shard in sorted(out.glob("part-*.parquet")):
        for name in set(pq.read_table(shard, columns=["path_bytes"]).column(0).to_pylist()):
            where.setdefault(name, []).append(shard)
    return where


def _error_rows(out: Path) -> dict[bytes, str]:
    """path_bytes -> reason, from the errors table and its parts."""
    import pyarrow.parquet as pq  # noqa: PLC0415 - as above

    found: dict[bytes, str] = {}
    for part in [out / ERRORS, *sorted((out / ERRORS_DIR).glob("part-*.parquet"))]:
        if part.is_file():
            t = pq.read_table(part, columns=["path_bytes", "reason"])
            found.update(zip(t.column(0).to_pylist(), t.column(1).to_pylist()))
    return found


def _recorded(out: Path) -> set[bytes]:
    """Files an earlier run finished: in a shard, or in the errors table."""
    return set(_shard_ids(out)) | set(_error_rows(out))


def _finish(out: Path, names: list[bytes], report: RayEmbedReport, schema) -> None:
    """Make every file appear once (a shard, else the errors table), write the errors table and _SUCCESS."""
    import pyarrow as pa  # noqa: PLC0415 - as above
    import pyarrow.compute as pc  # noqa: PLC0415 - as above
    import pyarrow.parquet as pq  # noqa: PLC0415 - as above

    where = _shard_ids(out)
    extra: dict[Path, set[bytes]] = {}
    for name, shards in where.items():
        for shard in shards[1:]:  # never expected (writes are idempotent); kept from turning into duplicates
            extra.setdefault(shard, set()).add(name)
    for shard, drop in extra.items():
        t = pq.read_table(shard)
        keep = pc.invert(pc.is_in(t.column("path_bytes"), value_set=pa.array(list(drop), pa.binary())))
        _write_atomic(t.filter(keep), shard)
        report.notes.append(FileIssue(str(shard), f"{display(shard)!r}: {len(drop)} files also held by another shard "
                                                  "were removed from it"))
    errors = {n: r for n, r in _error_rows(out).items() if n not in where}
    _write_atomic(errors_table(sorted(errors.items()), schema.metadata), out / ERRORS)
    for part in (out / ERRORS_DIR).glob("part-*.parquet"):
        part.unlink()
    shards = sorted(out.glob("part-*.parquet"))
    rows = sum(pq.ParquetFile(s).metadata.num_rows for s in shards)
    wanted = set(names)
    report.failed = [FileIssue(os.fsdecode(n), r) for n, r in sorted(errors.items()) if n in wanted]
    report.rows, report.videos, report.shards = rows, len(where), len(shards)
    missing = [n for n in names if n not in where and n not in errors]
    if missing:  # cannot happen: every file of the run was written, or recorded as failed
        raise BackendError(f"{len(missing)} files are in neither a shard nor the errors table; run again to finish")
    write_json_atomic(out / SUCCESS, {"files": len(where) + len(errors), "rows": rows, "failed": len(errors),
                                      "shards": len(shards), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                      "last_run": report.summary.as_dict()}, indent=1)
