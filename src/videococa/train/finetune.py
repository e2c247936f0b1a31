"""Lightweight finetuning on cached frozen features: the poolers and the text decoder learn, the encoder never runs.

Trained by default: `visual.attn_pool`, `visual.ln_post` and the text decoder; for the contrastive tasks also
`visual.proj` and the checkpoint's learnable temperature `logit_scale`; with `train_text` the text tower.
Temporal variants (`temporal`): none (flattened pooling, as zero-shot); embedding (a per-frame embedding at
zero); transformer (the embedding plus a factorised temporal self-attention whose output layers start at
zero). Every variant is exactly the zero-shot model at step 0.

Losses as in CoCa (Yu et al., 2022): captioning cross-entropy (QA pairs use `answer()`'s template) and
contrastive InfoNCE in both directions with the learnable temperature; `retrieval+caption` is their weighted
sum (CoCa's weights: 1 x contrastive + 2 x captioning). AdamW, linear warmup then cosine decay, gradient
clipping, optional bf16 autocast, gradient accumulation.

Scale-out: started by `torchrun --nproc_per_node K`, each process takes 1/K of every batch under
DistributedDataParallel (gloo on CPU, NCCL on GPU). Contrastive logits use the features of all processes, and
the captioning loss is normalised by the token count of the whole batch, so K processes compute the same loss
and update as one process with the same global batch.

A run directory holds `trained.safetensors` (only the trained parameters), `run.json` (base model and
fingerprint, data, hyper-parameters, metrics per epoch), `state.pt` (optimizer, step, RNG: exact resume),
`log.csv` (step, epoch, losses, lr) and, when the `tensorboard` package is installed, TensorBoard event files
in `tb/` with the same scalars and the validation metrics.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from tqdm import tqdm

from ..errors import FinetuneError
from ..files import atomic_path, save_tensors_atomic, write_json_atomic, write_text_atomic
from ..models.decoding import decoder_hidden
from ..models.videococa import TEMPORALS, VideoCoCa, check_choice
from .features import FeatureCache, clip_key

QA_TEMPLATE = "question: {} answer:"
Task = Literal["caption", "qa", "retrieval", "retrieval+caption"]
TASKS: tuple[str, ...] = ("caption", "qa", "retrieval", "retrieval+caption")
LOSS_WEIGHTS: dict[str, tuple[float, float]] = {  # task -> (contrastive, captioning); CoCa: 1 and 2
    "caption": (0.0, 1.0), "qa": (0.0, 1.0), "retrieval": (1.0, 0.0), "retrieval+caption": (1.0, 2.0)}
LOG_FIELDS = ["step", "epoch", "loss", "contrastive", "caption", "lr", "logit_scale"]


@dataclass
class FinetuneConfig:
    """Hyper-parameters of a finetuning run (recorded in run.json)."""

    task: str = "caption"
    """caption, qa, retrieval or retrieval+caption (which texts, and which losses by default)."""
    epochs: int = 3
    """Passes over the training pairs."""
    batch_size: int = 16
    """Pairs per forward pass, over all processes (the contrastive loss's negatives come from it)."""
    accumulate: int = 1
    """Batches whose gradients are summed before an optimizer step."""
    lr: float = 1e-4
    """Peak learning rate."""
    weight_decay: float = 0.05
    """AdamW weight decay (matrices only)."""
    warmup: int = 20
    """Linear warmup steps."""
    clip: float = 1.0
    """Gradient-norm clip."""
    bf16: bool = False
    """bf16 autocast for the forward pass."""
    temporal: str = "none"
    """none, embedding or transformer (see the module docstring); all start at the zero-shot model."""
    temporal_layers: int = 1
    """Blocks of the temporal transformer."""
    contrastive_weight: float | None = None
    """Weight of the contrastive loss; None: the task's default (LOSS_WEIGHTS)."""
    caption_weight: float | None = None
    """Weight of the captioning loss; None: the task's default (LOSS_WEIGHTS)."""
    train_text: bool = False
    """Also train the text tower (frozen by default)."""
    seed: int = 0
    """Seed of the data order and initialisation."""
    extra: dict = field(default_factory=dict)
    """Anything else worth recording (data paths, counts)."""

    def weights(self) -> tuple[float, float]:
        """(contrastive, captioning) loss weights after task defaults."""
        con, cap = LOSS_WEIGHTS[check_choice(self.task, TASKS, "finetuning task")]
        con = con if self.contrastive_weight is None else self.contrastive_weight
        cap = cap if self.caption_weight is None else self.caption_weight
        if con < 0 or cap < 0 or con + cap == 0:
            raise ValueError(f"loss weights must be >= 0 and not both 0, got contrastive={con}, caption={cap}")
        return con, cap


def training_pairs(items, task: str) -> list[tuple[str, str]]:
    """(clip key, text) pairs from reader items: question+answer in answer()'s template for qa, else every caption."""
    check_choice(task, TASKS, "finetuning task")
    pairs = []
    for it in items:
        key = clip_key(it.path, it.start, it.end)
        if task == "qa":
            pairs += [(key, f"{QA_TEMPLATE.format(it.question)} {a}") for a in it.answers[:1]]
        else:
            pairs += [(key, c) for c in it.captions]
    return pairs


def trainable_parameters(model: VideoCoCa, *, contrastive: bool = False,
                         train_text: bool = False) -> dict[str, torch.nn.Parameter]:
    """The parameters finetuning updates, by name (everything else is frozen)."""
    prefixes = ["coca.visual.attn_pool.", "coca.visual.ln_post.", "coca.text_decoder.", "temporal_mixer."]
    names = {"temporal_embedding"} | ({"coca.visual.proj", "coca.logit_scale"} if contrastive else set())
    if train_text:
        prefixes.append("coca.text.")
    out = {}
    for name, p in model.named_parameters():
        if name in names or name.startswith(tuple(prefixes)):
            if name == "coca.text.text_projection" and not contrastive:
                continue  # only the contrastive text latent uses it
            out[name] = p
    return out


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather(t: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor over processes, keeping gradients (rank order)."""
    if not _distributed():
        return t
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(t))


def contrastive_loss(video: torch.Tensor, text: torch.Tensor, keys: Sequence[str], logit_scale: torch.Tensor
                     ) -> torch.Tensor:
    """Symmetric InfoNCE of normalised (B, E) video and text embeddings, temperature exp(logit_scale).

    Other pairs of the same clip (several captions of one video in a batch) are not counted as negatives.
    """
    logits = logit_scale.exp() * video @ text.t()  # (B, B)
    ids = {k: i for i, k in enumerate(keys)}
    clip = torch.tensor([ids[k] for k in keys], device=logits.device)  # (B,) one id per clip
    same = clip[:, None] == clip[None, :]  # (B, B)
    same.fill_diagonal_(False)
    logits = logits.masked_fill(same, float("-inf"))
    labels = torch.arange(len(keys), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


class _Losses(nn.Module):
    """One forward of the finetuning losses (the module DistributedDataParallel wraps)."""

    def __init__(self, model: VideoCoCa, weights: tuple[float, float], train_text: bool):
        super().__init__()
        self.model = model
        self.con_w, self.cap_w = weights
        self.train_text = train_text

    def forward(self, frame_tokens: torch.Tensor, tok: torch.Tensor, keys: list[str], caption_tokens: int,
                share: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """frame_tokens (b, T, N, W), tok (b, L) of this process; `caption_tokens`: target tokens in the whole
        batch over all processes; `share`: the batch's part of the optimizer step. Returns this process's
        loss to backpropagate and the (contrastive, caption) values of the whole batch."""
        coca = self.model.coca
        if not self.con_w:  # drop all-padding columns: exact for the captioning loss (causal attention,
            tok = tok[:, : int((tok != 0).sum(1).max())]  # padding targets ignored), and 5-7x less work
        with torch.set_grad_enabled(self.train_text and torch.is_grad_enabled()):
            text_latent, text_embs = coca._encode_text(tok)  # (b, E) normalised, (b, L, W)
        pooled, image_embs = self.model.pool(frame_tokens.float())  # (b, E), (b, Q-1, E) with gradients
        video = F.normalize(pooled, dim=-1)
        zero = frame_tokens.new_zeros(())
        con = cap_sum = zero
        world = dist.get_world_size() if _distributed() else 1
        if self.con_w:
            all_keys = keys
            if _distributed():
                gathered: list = [None] * world
                dist.all_gather_object(gathered, keys)
                all_keys = [k for part in gathered for k in part]
            con = contrastive_loss(_gather(video.float()), _gather(text_latent.float()), all_keys, coca.logit_scale)
        if self.cap_w:
            hidden = decoder_hidden(coca.text_decoder, image_embs, text_embs[:, :-1])  # (b, L-1, W)
            logits = hidden @ coca.text_decoder.text_projection  # (b, L-1, V)
            labels = tok[:, 1:]
            cap_sum = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                      ignore_index=0, reduction="sum")
        cap = cap_sum / caption_tokens * world  # averaged over processes by DDP: the whole batch's token mean
        loss = (self.con_w * con + self.cap_w * cap) * share
        return loss, con.detach(), cap.detach() / world


def caption_loss(model: VideoCoCa, frame_tokens: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
    """CoCa's captioning cross-entropy (mean over target tokens) for (B, T, N, W) cached tokens and their texts."""
    tok = model.tokenize(texts).to(model.device)  # (B, L)
    losses = _Losses(model, (0.0, 1.0), train_text=False)
    return losses(frame_tokens, tok, [""] * len(texts), int((tok[:, 1:] != 0).sum()), 1.0)[0]


def _lr(step: int, total: int, cfg: FinetuneConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, total - cfg.warmup)))


def _tensorboard(run: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the tensorboard package is optional; log.csv has the same numbers
        return None
    return SummaryWriter(str(run / "tb"))


def _init_distributed(model: VideoCoCa) -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); True if this call created it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    dist.init_process_group("nccl" if model.device.type == "cuda" else "gloo")
    return True


def finetune(model: VideoCoCa, cache: FeatureCache, train_pairs: list[tuple[str, str]], run_dir: str | os.PathLike,
             cfg: FinetuneConfig, *, evaluate=None, max_steps: int | None = None, progress: bool = False) -> dict:
    """Train (or resume) a run in `run_dir`; returns run.json's content. `evaluate(model) -> dict` runs each epoch.

    `max_steps` stops early (as an interruption would); calling again resumes exactly where it stopped.
    Under torchrun every process calls this with the same arguments; process 0 writes the run directory.
    """
    check_choice(cfg.temporal, TEMPORALS, "temporal variant")
    weights = cfg.weights()
    own_group = _init_distributed(model)
    rank, world = (dist.get_rank(), dist.get_world_size()) if _distributed() else (0, 1)
    if cfg.batch_size % world:
        raise FinetuneError(f"batch size {cfg.batch_size} does not split evenly over {world} processes")
    run = Path(run_dir)
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
    missing = sorted({k for k, _ in train_pairs if k not in cache})
    pairs = [(k, t) for k, t in train_pairs if k in cache]
    if not pairs:
        raise FinetuneError(f"none of the {len(train_pairs)} training pairs has its clip in the feature cache "
                            f"{str(cache.path)!r}")
    torch.manual_seed(cfg.seed)
    model.enable_temporal(cfg.temporal, layers=cfg.temporal_layers)  # type: ignore[arg-type]
    base = {"model": model.info.name, "pretrained": model.info.pretrained, "fingerprint": cache.manifest["fingerprint"]}
    params = trainable_parameters(model, contrastive=weights[0] > 0, train_text=cfg.train_text)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    decay = [p for n, p in params.items() if p.ndim >= 2 and "embedding" not in n and not n.endswith(".pos")]
    other = [p for n, p in params.items() if not any(p is q for q in decay)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0}],
                            lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    used = len(pairs) - len(pairs) % world  # with K processes up to K-1 pairs per epoch are left out, so
    steps_per_epoch = math.ceil(used / (cfg.batch_size * cfg.accumulate))  # that every batch splits evenly
    total = steps_per_epoch * cfg.epochs
    state_path, info_path = run / "state.pt", run / "run.json"
    step, history = 0, []
    if state_path.is_file():
        info = json.loads(info_path.read_text())
        if info["base"]["fingerprint"] != base["fingerprint"]:
            raise FinetuneError(f"run {str(run)!r} was trained on {info['base']['model']} "
                                f"(weights {info['base']['fingerprint']}); this cache/model is {base['fingerprint']}")
        defaults = asdict(FinetuneConfig())
        was = {k: info["config"].get(k, defaults[k]) for k in ("task", "temporal", "temporal_layers", "train_text")}
        if was != {k: getattr(cfg, k) for k in was}:
            raise FinetuneError(f"run {str(run)!r} was made with {', '.join(f'{k}={v}' for k, v in was.items())}; "
                                "resume it with the same settings")
        trained = load_file(str(run / "trained.safetensors"))
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(trained[n])
        st = torch.load(state_path, weights_only=False)
        opt.load_state_dict(st["optimizer"])
        step, history = st["step"], info.get("history", [])
        torch.set_rng_state(st["torch_rng"])
    losses = _Losses(model, weights, cfg.train_text)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [model.device.index] if model.device.type == "cuda" else None
        losses = DistributedDataParallel(losses, device_ids=device_ids, find_unused_parameters=cfg.train_text)
    log_f = tb = None
    if rank == 0:
        log_f = _open_log(run / "log.csv", step)
        tb = _tensorboard(run)
    log = csv.writer(log_f) if log_f else None
    t0 = time.time()
    model.train()
    bar = tqdm(total=total, initial=step, desc="finetune", unit="step", disable=not progress or rank != 0)
    stop = total if max_steps is None else min(total, max_steps)
    per_step = cfg.batch_size * cfg.accumulate
    try:
        while step < stop:
            epoch, within = divmod(step, steps_per_epoch)
            order = list(range(len(pairs)))
            random.Random(cfg.seed * 1000 + epoch).shuffle(order)  # the same order on resume and on every process
            order = order[:used]
            chunk = order[within * per_step : (within + 1) * per_step]
            lr = _lr(step, total, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad(set_to_none=True)
            sums = torch.zeros(2)  # contrastive, caption (whole step)
            batches = [chunk[b : b + cfg.batch_size] for b in range(0, len(chunk), cfg.batch_size)]
            for bi, batch in enumerate(batches):
                mine = batch[rank::world]
                tok = model.tokenize([pairs[i][1] for i in mine]).to(model.device)  # (b, L)
                n_tok = (tok[:, 1:] != 0).sum()
                if world > 1:
                    dist.all_reduce(n_tok)
                feats = torch.stack([cache.get(pairs[i][0]) for i in mine]).to(model.device)  # (b, T, N, W)
                sync = world == 1 or bi == len(batches) - 1
                with contextlib.nullcontext() if sync else losses.no_sync():
                    with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                        loss, con, cap = losses(feats, tok, [pairs[i][0] for i in mine], int(n_tok),
                                                len(batch) / len(chunk))
                    loss.backward()
                sums += torch.stack([con.float().cpu(), cap.float().cpu()]) * len(batch) / len(chunk)
            if world > 1:
                dist.all_reduce(sums)  # caption parts add up over processes; the contrastive part is on each
                sums[0] /= world
            torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.clip)
            opt.step()
            if "coca.logit_scale" in params:
                with torch.no_grad():
                    model.coca.logit_scale.clamp_(0, math.log(100))  # as CLIP and open_clip do
            step += 1
            con_v, cap_v = (float(v) for v in sums)
            total_loss = weights[0] * con_v + weights[1] * cap_v
            if rank == 0:
                scale = float(model.coca.logit_scale.detach().exp())
                log.writerow([step, epoch, round(total_loss, 5), round(con_v, 5), round(cap_v, 5), lr, round(scale, 4)])
                if tb is not None:
                    for k, v in (("loss", total_loss), ("contrastive", con_v), ("caption", cap_v), ("lr", lr),
                                 ("logit_scale", scale)):
                        tb.add_scalar(f"train/{k}", v, step)
            bar.update(1)
            bar.set_postfix(loss=f"{total_loss:.3f}")
            if step % steps_per_epoch == 0 or step == stop:
                if rank == 0:
                    if step % steps_per_epoch == 0 and evaluate is not None:
                        model.eval()
                        model.refresh_fingerprint()
                        metrics = evaluate(model)
                        model.train()
                        history.append({"epoch": epoch + 1, "step": step, **metrics})
                        if tb is not None:
                            for k, v in metrics.items():
                                if isinstance(v, (int, float)):
                                    tb.add_scalar(f"val/{k}", v, step)
                    _save(run, model, params, opt, step, base, cfg, history, pairs, missing, time.time() - t0, world)
                    log_f.flush()
                if world > 1:
                    dist.barrier()
    finally:
        bar.close()
        if log_f:
            log_f.close()
        if tb is not None:
            tb.close()
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        model.refresh_fingerprint()
    if world > 1:
        dist.barrier()
    out = json.loads(info_path.read_text())
    if own_group:
        dist.destroy_process_group()
    return out


def _open_log(path: Path, step: int):
    """Open log.csv for appending; rows past the resumed step (from an interrupted run) are dropped first."""
    rows = []
    if path.is_file():
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header == LOG_FIELDS:
                rows = [r for r in reader if r and int(r[0]) <= step]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(LOG_FIELDS)
    w.writerows(rows)
    write_text_atomic(path, buf.getvalue())
    return open(path, "a", newline="")


def _save(run: Path, model, params, opt, step, base, cfg, history, pairs, missing, seconds, world) -> None:
    save_tensors_atomic(run / "trained.safetensors", {n: p.detach() for n, p in params.items()})
    with atomic_path(run / "state.pt") as tmp:
        torch.save({"optimizer": opt.state_dict(), "step": step, "torch_rng": torch.get_rng_state()}, tmp)
    info = {"base": base, "config": asdict(cfg), "step": step, "history": history, "train_pairs": len(pairs),
            "missing_from_cache": len(missing), "processes": world, "seconds_this_session": round(seconds, 1)}
    write_json_atomic(run / "run.json", info, indent=1)


