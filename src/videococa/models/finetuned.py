"""Applying a finetuning run directory to its base model (the run is written by videococa.train).

The model package reads runs; it never imports the training package (as open_clip keeps its model
code free of its training code).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import FinetuneError
from .videococa import VideoCoCa


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
    cfg = info["config"]
    model.enable_temporal(cfg.get("temporal", "none"), layers=cfg.get("temporal_layers", 1))
    params = dict(model.named_parameters())
    unknown = sorted(set(trained) - set(params))
    if unknown:
        raise FinetuneError(f"run {str(run)!r} holds parameters this model does not have: {', '.join(unknown[:5])}")
    with torch.no_grad():
        for n, t in trained.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))
    model.refresh_fingerprint()
    return model
