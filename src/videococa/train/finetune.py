"""Lightweight finetuning on cached frozen features: the poolers and the text decoder learn, the encoder never runs.

Trained by default: `visual.attn_pool`, `visual.ln_post` and the text decoder; for the contrastive tasks also
`visual.proj` and the checkpoint's learnable temperature `logit_scale`; with `train_text` the text tower.
Temporal variants (`temporal`): none (flattened pooling, as zero-shot); embedding (a per-frame embedding at
zero); transformer (the embedding plus a factorised temporal self-attention whose output layers start at
zero); divided (that plus a spatial block after each temporal one). `temporal_scaled` multiplies the mixer's
residual branches by each token's RMS and `temporal_lr` gives the temporal modules their own peak learning
rate (bench/RESULTS.md, issue 24). trajectory: learned soft-argmax tracks whose velocities make a motion vector
added to the frame tokens. Every variant is exactly the zero-shot model at step 0. `answer_head` (qa) adds an
answer-classification loss on the pooled embedding through a training-only head: with trajectory and a temporal_lr
of 5e-3 it is what lets motion be learned from the QA answers (issue 24).

Losses as in CoCa (Yu et al., 2022): captioning cross-entropy (QA pairs use `answer()`'s template) and
contrastive InfoNCE in both directions with the learnable temperature; `retrieval+caption` is their weighted
sum (CoCa's weights: 1 x contrastive + 2 x captioning). AdamW, linear warmup then cosine decay, gradient
clipping, optional bf16 autocast, gradient accumulation.

Scale-out: started by `torchrun --nproc_per_node K`, each process takes 1/K of every batch under
DistributedDataParallel (gloo on CPU, NCCL on GPU). Contrastive logits use the features of all processes, and
the captioning loss is normalised by the token count of the whole batch, so K processes compute the same loss
and update as one process with the same global batch.

A run directory (`videococa.models.finetuned.RunDir`, which `load_model(finetuned=)` reads too) holds
`trained.safetensors` (only the trained parameters), `run.json` (the base model's provenance, data,
hyper-parameters, metrics per epoch), `state.pt` (optimizer, step, RNG: exact resume), `log.csv` (step,
epoch, losses, lr) and, when the `tensorboard` package is installed, TensorBoard event files in `tb/` with
the same scalars and the validation metrics.
"""

from __future__ import annotations

import contextlib
import csv
import io
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
from torch import nn
from tqdm import tqdm

from ..errors import FinetuneError, OptionError
from ..text import QA_TEMPLATE, qa_text
from ..files import write_text_atomic
from ..models.decoding import decoder_hidden
from ..models.finetuned import RunDir
from ..models.videococa import TEMPORALS, VideoCoCa, check_choice
from .features import FeatureCache, clip_key

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
    temporal_scaled: bool = False
    """The temporal mixer's residual branches scaled by each token's RMS (`VideoCoCa.enable_temporal(scaled=)`)."""
    temporal_lr: float | None = None
    """Peak learning rate of the new temporal modules (same warmup and cosine); None: `lr`."""
    answer_only: bool = False
    """qa only: the captioning loss on the answer tokens alone, not on the question prompt before them (as VQA
    finetuning of generative models usually does); the default trains on the whole text, as CoCa's captioning."""
    answer_head: float = 0.0
    """qa only: weight of an auxiliary answer loss, a linear head over the training answers on the pooled video
    embedding with each pair's answer as target (the question is not an input). It gives the modules before the
    pooler a direct learning signal, which the decoder's loss alone did not (issue 24); the head exists only during
    training (state.pt keeps it for resuming; trained.safetensors does not)."""
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
            raise OptionError(f"loss weights must be >= 0 and not both 0, got contrastive={con}, caption={cap}")
        return con, cap


def training_pairs(items, task: str) -> list[tuple[str, str]]:
    """(clip key, text) pairs from reader items: question+answer in answer()'s template for qa, else every caption."""
    check_choice(task, TASKS, "finetuning task")
    pairs = []
    for it in items:
        key = clip_key(it.path, it.start, it.end)
        if task == "qa":
            pairs += [(key, qa_text(it.question, a)) for a in it.answers[:1]]
        else:
            pairs += [(key, c) for c in it.captions]
    return pairs


def trainable_parameters(model: VideoCoCa, *, contrastive: bool = False,
                         train_text: bool = False) -> dict[str, torch.nn.Parameter]:
    """The parameters finetuning updates, by name (everything else is frozen)."""
    prefixes = ["coca.visual.attn_pool.", "coca.visual.ln_post.", "coca.text_decoder.", "temporal_mixer.",
                "temporal_trajectory."]
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

    def __init__(self, model: VideoCoCa, weights: tuple[float, float], train_text: bool,
                 answer_head: nn.Linear | None = None, answer_weight: float = 0.0):
        super().__init__()
        self.model = model
        self.con_w, self.cap_w = weights
        self.train_text = train_text
        self.answer_head = answer_head  # a submodule, so DistributedDataParallel averages its gradients too
        self.answer_w = answer_weight

    def forward(self, frame_tokens: torch.Tensor, token_ids: torch.Tensor, keys: list[str], caption_tokens: int,
                share: float, answers: torch.Tensor | None = None, rows: int = 0,
                targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """frame_tokens (b, T, N, W), text token_ids (b, L) of this process; `caption_tokens`: target tokens in
        the whole batch over all processes; `share`: the batch's part of the optimizer step; `answers` (b,): each
        pair's index in the answer head's vocabulary and `rows` the batch's pairs over all processes (with an
        answer head); `targets` (b, L-1): the captioning targets if not token_ids[:, 1:] (0: ignored). Returns this
        process's loss to backpropagate and the (contrastive, caption) values of the whole batch."""
        coca = self.model.coca
        if not self.con_w:  # drop all-padding columns: exact for the captioning loss (causal attention,
            token_ids = token_ids[:, : int((token_ids != 0).sum(1).max())]  # padding targets ignored); 5-7x less work
        with torch.set_grad_enabled(self.train_text and torch.is_grad_enabled()):
            text_latent, text_embs = coca._encode_text(token_ids)  # (b, E) normalised, (b, L, W)
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
            labels = token_ids[:, 1:] if targets is None else targets[:, : token_ids.shape[1] - 1]
            cap_sum = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                      ignore_index=0, reduction="sum")
        cap = cap_sum / caption_tokens * world  # averaged over processes by DDP: the whole batch's token mean
        loss = (self.con_w * con + self.cap_w * cap) * share
        if self.answer_head is not None and answers is not None:
            logits = self.answer_head(pooled.float())  # (b, answers)
            ans = F.cross_entropy(logits, answers, reduction="sum") / rows * world  # the whole batch's mean
            loss = loss + self.answer_w * ans * share
        return loss, con.detach(), cap.detach() / world


def caption_loss(model: VideoCoCa, frame_tokens: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
    """CoCa's captioning cross-entropy (mean over target tokens) for (B, T, N, W) cached tokens and their texts."""
    token_ids = model.tokenize(texts).to(model.device)  # (B, L)
    losses = _Losses(model, (0.0, 1.0), train_text=False)
    return losses(frame_tokens, token_ids, [""] * len(texts), int((token_ids[:, 1:] != 0).sum()), 1.0)[0]


def _lr(step: int, total: int, cfg: FinetuneConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, total - cfg.warmup)))


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the tensorboard package is optional; log.csv has the same numbers
        return None
    return SummaryWriter(str(path))


def _init_distributed(model: VideoCoCa) -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); True if this call created it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    dist.init_process_group("nccl" if model.device.type == "cuda" else "gloo")
    return True


@dataclass
class _Session:
    """One finetuning session: made by _set_up (which resumes a saved run), advanced by train_one_epoch."""

    model: VideoCoCa
    """The model being trained."""
    params: dict[str, nn.Parameter]
    """Its parameters that finetuning updates, by name (what trained.safetensors holds)."""
    opt: torch.optim.Optimizer
    """AdamW over `params`."""
    losses: nn.Module
    """The loss forward: _Losses, wrapped in DistributedDataParallel when several processes take part."""
    pairs: list[tuple[str, str]]
    """The (clip key, text) training pairs whose clip is in the feature cache."""
    missing: int
    """How many clips of the training pairs the feature cache lacks."""
    base: dict
    """The base model's `provenance()` (name, pretrained tag, precision, weight fingerprint, ...): run.json's `base`."""
    rank: int
    """This process's rank; process 0 writes the run directory."""
    world: int
    """Processes taking part; each takes 1/world of every batch."""
    used: int
    """Pairs per epoch: all pairs but up to world-1, so that every batch splits evenly over the processes."""
    steps_per_epoch: int
    """Optimizer steps per epoch."""
    total: int
    """Optimizer steps of the whole run (all epochs)."""
    step: int = 0
    """Optimizer steps taken so far, over every session of the run."""
    history: list[dict] = field(default_factory=list)
    """Validation metrics per epoch (run.json's `history`)."""
    answer_ids: list[int] | None = None
    """Each pair's index in the answer head's vocabulary (`FinetuneConfig.answer_head`); None without a head."""


TEMPORAL_PREFIXES = ("temporal_embedding", "temporal_mixer.", "temporal_trajectory.")
"""Names of the parameters `VideoCoCa.enable_temporal` adds (the ones `temporal_lr` applies to)."""


def _optimizer(params: dict[str, nn.Parameter], cfg: FinetuneConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (not on embeddings, positions, biases or norms). Each group's
    `lr_scale` multiplies the scheduled lr: `temporal_lr / lr` for the temporal modules, else 1."""
    groups = []
    split = cfg.temporal_lr is not None  # else the two groups of runs saved before temporal_lr existed (resume)
    for temporal in (False, True) if split else (None,):
        scale = cfg.temporal_lr / cfg.lr if temporal and cfg.temporal_lr else 1.0
        named = {n: p for n, p in params.items() if temporal is None or n.startswith(TEMPORAL_PREFIXES) == temporal}
        decay = [p for n, p in named.items() if p.ndim >= 2 and "embedding" not in n and not n.endswith(".pos")]
        other = [p for n, p in named.items() if not any(p is q for q in decay)]
        groups += [{"params": ps, "weight_decay": wd, "lr_scale": scale}
                   for ps, wd in ((decay, cfg.weight_decay), (other, 0.0)) if ps]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


def _resume(run: RunDir, cfg: FinetuneConfig, base: dict, params: dict[str, nn.Parameter],
            opt: torch.optim.Optimizer) -> tuple[int, list[dict]]:
    """Load a saved run's parameters, optimizer and RNG state after checking it matches; returns (step, history)."""
    info = run.read_info(base["fingerprint"], against=f"this cache/model is {base['fingerprint']}")
    defaults = asdict(FinetuneConfig())
    was = {k: info["config"].get(k, defaults[k])
           for k in ("task", "temporal", "temporal_layers", "temporal_scaled", "train_text", "answer_head")}
    if was != {k: getattr(cfg, k) for k in was}:
        raise FinetuneError(f"run {str(run)!r} was made with {', '.join(f'{k}={v}' for k, v in was.items())}; "
                            "resume it with the same settings")
    trained = run.read_trained()
    state = run.read_state()
    trained.update(state.get("answer_head", {}))
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(trained[n])
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return state["step"], info.get("history", [])


ANSWER_HEAD = "answer_head"
"""Name prefix of the answer head's parameters among a session's `params` (never saved with the run's weights)."""


_ANSWER_MARKER = QA_TEMPLATE.split("{}")[1].strip()  # "answer:": where the prompt ends in a QA training text


def qa_answer(text: str) -> str:
    """The answer of a QA training text made by `qa_text` with the default template ("question: ... answer: red")."""
    _, found, answer = text.rpartition(_ANSWER_MARKER)
    return answer.strip() if found else ""


def answer_targets(model: VideoCoCa, token_ids: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
    """Captioning targets token_ids[:, 1:] (B, L-1) with the question prompt's targets set to 0 (ignored): what is
    left is the answer's tokens and the end token. The prompt of a text is everything up to its last 'answer:'."""
    marker = _ANSWER_MARKER
    prompts = [t[: t.rindex(marker) + len(marker)] if marker in t else "" for t in texts]
    n_prompt = (model.tokenize(prompts) != 0).sum(1) - 2  # SOT + prompt tokens + EOT alone
    targets = token_ids[:, 1:].clone()  # (B, L-1)
    positions = torch.arange(targets.shape[1], device=targets.device)[None, :]
    targets[positions < n_prompt.to(targets.device)[:, None]] = 0
    return targets


def _answer_head(model: VideoCoCa, pairs: list[tuple[str, str]], cfg: FinetuneConfig
                 ) -> tuple[nn.Linear | None, list[int] | None]:
    """With `cfg.answer_head`: a linear head (pooled embedding -> the training answers) and each pair's answer."""
    if not cfg.answer_head:
        return None, None
    answers = [qa_answer(t) for _, t in pairs]
    vocab = {a: i for i, a in enumerate(sorted(set(answers)))}
    visual = model.coca.visual
    width = visual.proj.shape[1] if visual.proj is not None else visual.ln_post.normalized_shape[0]
    head = nn.Linear(width, len(vocab)).to(model.device)
    return head, [vocab[a] for a in answers]


def _loss_module(model: VideoCoCa, cfg: FinetuneConfig, world: int, head: nn.Linear | None) -> nn.Module:
    losses = _Losses(model, cfg.weights(), cfg.train_text, head, cfg.answer_head)
    if world == 1:
        return losses
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [model.device.index] if model.device.type == "cuda" else None
    return DistributedDataParallel(losses, device_ids=device_ids, find_unused_parameters=cfg.train_text)


def _set_up(model: VideoCoCa, cache: FeatureCache, train_pairs: list[tuple[str, str]], cfg: FinetuneConfig,
            run: RunDir, rank: int, world: int) -> _Session:
    """Seed, add the temporal modules, unfreeze the trained parameters, make the optimizer, resume a saved run."""
    missing = {k for k, _ in train_pairs if k not in cache}
    pairs = [(k, t) for k, t in train_pairs if k in cache]
    if not pairs:
        raise FinetuneError(f"none of the {len(train_pairs)} training pairs has its clip in the feature cache "
                            f"{str(cache.path)!r}")
    base = model.provenance()  # before enable_temporal, whose new modules change the fingerprint
    torch.manual_seed(cfg.seed)
    model.enable_temporal(cfg.temporal, layers=cfg.temporal_layers,  # type: ignore[arg-type]
                          scaled=cfg.temporal_scaled)
    params = trainable_parameters(model, contrastive=cfg.weights()[0] > 0, train_text=cfg.train_text)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    head, answer_ids = _answer_head(model, pairs, cfg)
    if head is not None:
        params.update({f"{ANSWER_HEAD}.{k}": p for k, p in head.named_parameters()})
    opt = _optimizer(params, cfg)
    step, history = _resume(run, cfg, base, params, opt) if run.can_resume() else (0, [])
    used = len(pairs) - len(pairs) % world
    steps_per_epoch = math.ceil(used / (cfg.batch_size * cfg.accumulate))
    return _Session(model, params, opt, _loss_module(model, cfg, world, head), pairs, len(missing), base, rank, world,
                    used, steps_per_epoch, steps_per_epoch * cfg.epochs, step, history, answer_ids)


class _StepLog:
    """Process 0's training log: log.csv (appended; rows past a resumed step dropped) and TensorBoard scalars."""

    def __init__(self, run: RunDir, step: int):
        self.file = _open_log(run.log_path, step)
        self.csv = csv.writer(self.file)
        self.tb = _tensorboard(run.tb_path)

    def train(self, step: int, epoch: int, scalars: dict[str, float]) -> None:
        """One optimizer step: loss, contrastive, caption, lr, logit_scale (LOG_FIELDS' order after step, epoch)."""
        digits = {"loss": 5, "contrastive": 5, "caption": 5, "logit_scale": 4}  # lr as it is
        self.csv.writerow([step, epoch] + [round(v, digits[k]) if k in digits else v for k, v in scalars.items()])
        self._scalars("train", scalars, step)

    def validation(self, metrics: dict, step: int) -> None:
        self._scalars("val", {k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step)

    def _scalars(self, group: str, scalars: dict, step: int) -> None:
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(f"{group}/{k}", v, step)

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


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


def _backward(s: _Session, cfg: FinetuneConfig, cache: FeatureCache, batch: list[int], step_pairs: int, *,
              sync: bool) -> torch.Tensor:
    """Forward and backward of this process's part of `batch`, weighted by the batch's share of the step's
    `step_pairs` pairs; `sync`: all-reduce the gradients now (the step's last batch). Returns the whole batch's
    (contrastive, caption) losses times that share."""
    mine = batch[s.rank :: s.world]
    token_ids = s.model.tokenize([s.pairs[i][1] for i in mine]).to(s.model.device)  # (b, L)
    targets = answer_targets(s.model, token_ids, [s.pairs[i][1] for i in mine]) if cfg.answer_only else None
    n_targets = ((token_ids[:, 1:] if targets is None else targets) != 0).sum()
    if s.world > 1:
        dist.all_reduce(n_targets)
    feats = torch.stack([cache.get(s.pairs[i][0]) for i in mine]).to(s.model.device)  # (b, T, N, W)
    answers = None
    if s.answer_ids is not None:
        answers = torch.tensor([s.answer_ids[i] for i in mine], device=s.model.device)  # (b,)
    with contextlib.nullcontext() if sync else s.losses.no_sync():
        with torch.autocast(s.model.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            loss, con, cap = s.losses(feats, token_ids, [s.pairs[i][0] for i in mine], int(n_targets),
                                     len(batch) / step_pairs, answers, len(batch), targets)
        loss.backward()
    return torch.stack([con.float().cpu(), cap.float().cpu()]) * len(batch) / step_pairs


def _train_step(s: _Session, cfg: FinetuneConfig, cache: FeatureCache, chunk: list[int], lr: float
                ) -> tuple[float, float]:
    """One optimizer step over the pairs `chunk` (accumulated over batches); returns (contrastive, caption)."""
    for g in s.opt.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
    s.opt.zero_grad(set_to_none=True)
    sums = torch.zeros(2)  # contrastive, caption (whole step)
    batches = [chunk[b : b + cfg.batch_size] for b in range(0, len(chunk), cfg.batch_size)]
    for bi, batch in enumerate(batches):
        sums += _backward(s, cfg, cache, batch, len(chunk), sync=s.world == 1 or bi == len(batches) - 1)
    if s.world > 1:
        dist.all_reduce(sums)  # caption parts add up over processes; the contrastive part is on each
        sums[0] /= s.world
    torch.nn.utils.clip_grad_norm_(list(s.params.values()), cfg.clip)
    s.opt.step()
    if "coca.logit_scale" in s.params:
        with torch.no_grad():
            s.model.coca.logit_scale.clamp_(0, math.log(100))  # as CLIP and open_clip do
    return float(sums[0]), float(sums[1])


def train_one_epoch(s: _Session, cfg: FinetuneConfig, cache: FeatureCache, *, stop: int, log: _StepLog | None,
                    bar: tqdm) -> None:
    """Optimizer steps from `s.step` to the end of its epoch or to `stop`, in the epoch's shuffled pair order."""
    epoch = s.step // s.steps_per_epoch
    order = list(range(len(s.pairs)))
    random.Random(cfg.seed * 1000 + epoch).shuffle(order)  # the same order on resume and on every process
    order = order[: s.used]
    per_step = cfg.batch_size * cfg.accumulate
    weights = cfg.weights()
    while s.step < min(stop, (epoch + 1) * s.steps_per_epoch):
        within = s.step - epoch * s.steps_per_epoch
        lr = _lr(s.step, s.total, cfg)
        con, cap = _train_step(s, cfg, cache, order[within * per_step : (within + 1) * per_step], lr)
        s.step += 1
        total_loss = weights[0] * con + weights[1] * cap
        if log is not None:
            scale = float(s.model.coca.logit_scale.detach().exp())
            log.train(s.step, epoch, {"loss": total_loss, "contrastive": con, "caption": cap, "lr": lr,
                                      "logit_scale": scale})
        bar.update(1)
        bar.set_postfix(loss=f"{total_loss:.3f}")


def validate(model: VideoCoCa, evaluate) -> dict:
    """`evaluate(model)` on the model as trained so far (eval mode, fingerprint refreshed), then back to training."""
    model.eval()
    model.refresh_fingerprint()
    metrics = evaluate(model)
    model.train()
    return metrics


def _checkpoint(s: _Session, cfg: FinetuneConfig, run: RunDir, log: _StepLog | None, evaluate,
                seconds: float) -> None:
    """At the end of an epoch (validated with `evaluate`) or of the session: process 0 saves the run."""
    if s.rank == 0:
        if s.step % s.steps_per_epoch == 0 and evaluate is not None:
            metrics = validate(s.model, evaluate)
            s.history.append({"epoch": s.step // s.steps_per_epoch, "step": s.step, **metrics})
            log.validation(metrics, s.step)
        state = {"optimizer": s.opt.state_dict(), "step": s.step, "torch_rng": torch.get_rng_state()}
        head = {n: p.detach().clone() for n, p in s.params.items() if n.startswith(ANSWER_HEAD + ".")}
        if head:
            state["answer_head"] = head  # training-only: resumed from here, never loaded onto a model
        info = {"base": s.base, "config": asdict(cfg), "step": s.step, "history": s.history,
                "train_pairs": len(s.pairs), "missing_from_cache": s.missing, "processes": s.world,
                "seconds_this_session": round(seconds, 1)}
        run.save(info, {n: p for n, p in s.params.items() if n not in head}, state)
        log.flush()
    if s.world > 1:
        dist.barrier()


def finetune(model: VideoCoCa, cache: FeatureCache, train_pairs: list[tuple[str, str]], run_dir: str | os.PathLike,
             cfg: FinetuneConfig, *, evaluate=None, max_steps: int | None = None, progress: bool = False) -> dict:
    """Train (or resume) a run in `run_dir`; returns run.json's content. `evaluate(model) -> dict` runs each epoch.

    `max_steps` stops early (as an interruption would); calling again resumes exactly where it stopped.
    Under torchrun every process calls this with the same arguments; process 0 writes the run directory.
    """
    check_choice(cfg.temporal, TEMPORALS, "temporal variant")
    cfg.weights()  # checks the task and the loss weights
    if cfg.answer_only and cfg.task != "qa":
        raise OptionError(f"answer_only is for task qa only (got task {cfg.task!r})")
    if cfg.answer_head < 0 or (cfg.answer_head and cfg.task != "qa"):
        raise OptionError(f"answer_head must be >= 0 and is for task qa only (got {cfg.answer_head} with task "
                          f"{cfg.task!r})")
    own_group = _init_distributed(model)
    rank, world = (dist.get_rank(), dist.get_world_size()) if _distributed() else (0, 1)
    if cfg.batch_size % world:
        raise FinetuneError(f"batch size {cfg.batch_size} does not split evenly over {world} processes")
    run = RunDir(run_dir)
    if rank == 0:
        run.path.mkdir(parents=True, exist_ok=True)
    s = _set_up(model, cache, train_pairs, cfg, run, rank, world)
    log = _StepLog(run, s.step) if rank == 0 else None
    t0 = time.time()
    model.train()
    bar = tqdm(total=s.total, initial=s.step, desc="finetune", unit="step", disable=not progress or rank != 0)
    stop = s.total if max_steps is None else min(s.total, max_steps)
    try:
        while s.step < stop:
            train_one_epoch(s, cfg, cache, stop=stop, log=log, bar=bar)
            _checkpoint(s, cfg, run, log, evaluate, time.time() - t0)
    finally:
        bar.close()
        if log is not None:
            log.close()
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        model.refresh_fingerprint()
    if world > 1:
        dist.barrier()
    out = run.read_info()
    if own_group:
        dist.destroy_process_group()
    return out
