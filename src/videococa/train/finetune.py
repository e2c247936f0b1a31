"""Lightweight finetuning on cached frozen features: the poolers and the text decoder learn, the encoder never runs.

Trained by default: `visual.attn_pool`, `visual.ln_post`, `visual.proj` and the text decoder; with
`temporal="embedding"` also a per-frame embedding added to the frame tokens before pooling, initialised at
zero so that step 0 is exactly the zero-shot model. The text tower and the image encoder stay frozen.
Loss: CoCa's captioning cross-entropy (QA pairs use `answer()`'s template). AdamW, linear warmup then
cosine decay, gradient clipping, optional bf16 autocast, gradient accumulation.

A run directory holds `trained.safetensors` (only the trained parameters), `run.json` (base model and
fingerprint, data, hyper-parameters, metrics per epoch), `state.pt` (optimizer, step, RNG: exact resume)
and `log.csv` (step, loss, lr).
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm import tqdm

from ..errors import VideoCoCaError
from ..files import atomic_path, save_tensors_atomic, write_json_atomic
from ..models.decoding import decoder_hidden
from ..models.videococa import MAX_FRAMES, VideoCoCa
from .features import FeatureCache, clip_key

QA_TEMPLATE = "question: {} answer:"
Temporal = Literal["none", "embedding"]


class FinetuneError(VideoCoCaError):
    """A finetuning run that cannot start or resume as asked."""


@dataclass
class FinetuneConfig:
    """Hyper-parameters of a finetuning run (recorded in run.json)."""

    task: str = "caption"
    """caption or qa (the captioning loss on captions, or on question+answer texts)."""
    epochs: int = 3
    """Passes over the training pairs."""
    batch_size: int = 16
    """Pairs per optimizer step (before accumulation)."""
    accumulate: int = 1
    """Batches whose gradients are summed before a step."""
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
    """none (flattened pooling, as zero-shot) or embedding (a learned per-frame embedding, zero at step 0)."""
    seed: int = 0
    """Seed of the data order and initialisation."""
    extra: dict = field(default_factory=dict)
    """Anything else worth recording (data paths, counts)."""


def training_pairs(items, task: str) -> list[tuple[str, str]]:
    """(clip key, text) pairs from reader items: every caption, or question+answer in answer()'s template."""
    pairs = []
    for it in items:
        key = clip_key(it.path, it.start, it.end)
        if task == "caption":
            pairs += [(key, c) for c in it.captions]
        else:
            pairs += [(key, f"{QA_TEMPLATE.format(it.question)} {a}") for a in it.answers[:1]]
    return pairs


def add_temporal_embedding(model: VideoCoCa) -> None:
    """Give the model a zero-initialised per-frame embedding (so its outputs do not change until trained)."""
    width = model.coca.visual.transformer.width
    model.temporal_embedding = torch.nn.Parameter(torch.zeros(MAX_FRAMES, width, device=model.device))
    model.refresh_fingerprint()


def trainable_parameters(model: VideoCoCa) -> dict[str, torch.nn.Parameter]:
    """The parameters finetuning updates, by name (everything else is frozen)."""
    out = {}
    for name, p in model.named_parameters():
        if name.startswith(("coca.visual.attn_pool.", "coca.visual.ln_post.", "coca.text_decoder.")) or name in (
                "coca.visual.proj", "temporal_embedding"):
            out[name] = p
    return out


def pool_train(model: VideoCoCa, frame_tokens: torch.Tensor) -> torch.Tensor:
    """Differentiable flattened pooling: (B, T, N, W) -> generative tokens (B, Q-1, E)."""
    x = model.add_temporal(frame_tokens.float())  # (B, T, N, W)
    _, tokens = model.coca.visual._pool(x.flatten(1, 2))  # (B, T*N, W) -> (B, Q-1, E)
    return tokens


def caption_loss(model: VideoCoCa, frame_tokens: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
    """CoCa's captioning cross-entropy for (B, T, N, W) cached tokens and their texts."""
    coca = model.coca
    tok = model.tokenize(texts).to(model.device)  # (B, L)
    with torch.no_grad():
        _, text_embs = coca._encode_text(tok)  # frozen text tower: (B, L, W)
    image_embs = pool_train(model, frame_tokens)
    hidden = decoder_hidden(coca.text_decoder, image_embs, text_embs[:, :-1])  # (B, L-1, W)
    logits = hidden @ coca.text_decoder.text_projection  # (B, L-1, V)
    labels = tok[:, 1:]
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=0)


def _lr(step: int, total: int, cfg: FinetuneConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, total - cfg.warmup)))


def finetune(model: VideoCoCa, cache: FeatureCache, train_pairs: list[tuple[str, str]], run_dir: str | os.PathLike,
             cfg: FinetuneConfig, *, evaluate=None, max_steps: int | None = None, progress: bool = False) -> dict:
    """Train (or resume) a run in `run_dir`; returns run.json's content. `evaluate(model) -> dict` runs each epoch.

    `max_steps` stops early (as an interruption would); calling again resumes exactly where it stopped.
    """
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    missing = sorted({k for k, _ in train_pairs if k not in cache})
    pairs = [(k, t) for k, t in train_pairs if k in cache]
    if not pairs:
        raise FinetuneError(f"none of the {len(train_pairs)} training pairs has its clip in the feature cache "
                            f"{str(cache.path)!r}")
    torch.manual_seed(cfg.seed)
    if cfg.temporal == "embedding" and model.temporal_embedding is None:
        add_temporal_embedding(model)
    elif cfg.temporal not in ("none", "embedding"):
        raise ValueError(f"unknown temporal variant {cfg.temporal!r}; choose one of: none, embedding")
    base = {"model": model.info.name, "pretrained": model.info.pretrained, "fingerprint": cache.manifest["fingerprint"]}
    params = trainable_parameters(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    decay = [p for n, p in params.items() if p.ndim >= 2 and "embedding" not in n]
    other = [p for n, p in params.items() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0}],
                            lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    steps_per_epoch = math.ceil(len(pairs) / (cfg.batch_size * cfg.accumulate))
    total = steps_per_epoch * cfg.epochs
    state_path, info_path = run / "state.pt", run / "run.json"
    step, history = 0, []
    if state_path.is_file():
        info = json.loads(info_path.read_text())
        if info["base"]["fingerprint"] != base["fingerprint"]:
            raise FinetuneError(f"run {str(run)!r} was trained on {info['base']['model']} "
                                f"(weights {info['base']['fingerprint']}); this cache/model is {base['fingerprint']}")
        if info["config"]["temporal"] != cfg.temporal or info["config"]["task"] != cfg.task:
            raise FinetuneError(f"run {str(run)!r} was made with task={info['config']['task']}, "
                                f"temporal={info['config']['temporal']}; resume it with the same settings")
        trained = load_file(str(run / "trained.safetensors"))
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(trained[n])
        st = torch.load(state_path, weights_only=False)
        opt.load_state_dict(st["optimizer"])
        step, history = st["step"], info.get("history", [])
        torch.set_rng_state(st["torch_rng"])
    log_f = open(run / "log.csv", "a", newline="")
    log = csv.writer(log_f)
    if step == 0:
        log.writerow(["step", "epoch", "loss", "lr"])
    t0 = time.time()
    model.train()
    bar = tqdm(total=total, initial=step, desc="finetune", unit="step", disable=not progress)
    stop = total if max_steps is None else min(total, max_steps)
    try:
        while step < stop:
            epoch, within = divmod(step, steps_per_epoch)
            order = list(range(len(pairs)))
            random.Random(cfg.seed * 1000 + epoch).shuffle(order)  # the same order on resume
            per_step = cfg.batch_size * cfg.accumulate
            chunk = order[within * per_step : (within + 1) * per_step]
            for g in opt.param_groups:
                g["lr"] = _lr(step, total, cfg)
            opt.zero_grad(set_to_none=True)
            loss_sum = 0.0
            for b in range(0, len(chunk), cfg.batch_size):
                idx = chunk[b : b + cfg.batch_size]
                feats = torch.stack([cache.get(pairs[i][0]) for i in idx]).to(model.device)  # (b, T, N, W)
                with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                    loss = caption_loss(model, feats, [pairs[i][1] for i in idx]) * len(idx) / len(chunk)
                loss.backward()
                loss_sum += float(loss.detach())
            torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.clip)
            opt.step()
            step += 1
            log.writerow([step, epoch, round(loss_sum, 5), _lr(step - 1, total, cfg)])
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum:.3f}")
            if step % steps_per_epoch == 0 or step == stop:
                metrics = None
                if step % steps_per_epoch == 0 and evaluate is not None:
                    model.eval()
                    model.refresh_fingerprint()
                    metrics = evaluate(model)
                    model.train()
                    history.append({"epoch": epoch + 1, "step": step, **metrics})
                _save(run, model, params, opt, step, base, cfg, history, pairs, missing, time.time() - t0)
    finally:
        bar.close()
        log_f.close()
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        model.refresh_fingerprint()
    return json.loads(info_path.read_text())


def _save(run: Path, model, params, opt, step, base, cfg, history, pairs, missing, seconds) -> None:
    save_tensors_atomic(run / "trained.safetensors", dict(params))
    with atomic_path(run / "state.pt") as tmp:
        torch.save({"optimizer": opt.state_dict(), "step": step, "torch_rng": torch.get_rng_state()}, tmp)
    info = {"base": base, "config": asdict(cfg), "step": step, "history": history, "train_pairs": len(pairs),
            "missing_from_cache": len(missing), "seconds_this_session": round(seconds, 1)}
    write_json_atomic(run / "run.json", info, indent=1)


def apply_finetuned(model: VideoCoCa, run_dir: str | os.PathLike) -> VideoCoCa:
    """Load a run's trained parameters onto its base model (checked by weight fingerprint)."""
    run = Path(run_dir)
    if not (run / "run.json").is_file() or not (run / "trained.safetensors").is_file():
        raise FinetuneError(f"{str(run)!r} is not a finetuning run directory (needs run.json and trained.safetensors)")
    info = json.loads((run / "run.json").read_text())
    if info["base"]["fingerprint"] != model.fingerprint():
        raise FinetuneError(f"run {str(run)!r} was finetuned from {info['base']['model']} "
                            f"[{info['base']['pretrained']}] (weights {info['base']['fingerprint']}); "
                            f"the loaded base is {model.info.name} [{model.info.pretrained}] (weights {model.fingerprint()})")
    trained = load_file(str(run / "trained.safetensors"))
    if "temporal_embedding" in trained:
        add_temporal_embedding(model)
    params = trainable_parameters(model)
    unknown = sorted(set(trained) - set(params))
    if unknown:
        raise FinetuneError(f"run {str(run)!r} holds parameters this model does not have: {', '.join(unknown[:5])}")
    with torch.no_grad():
        for n, t in trained.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))
    model.refresh_fingerprint()
    return model
