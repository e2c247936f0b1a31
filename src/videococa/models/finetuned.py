"""Finetuning run directories: their layout, reading and writing them, and applying one to its base model.

The training package (videococa.train) writes runs through `RunDir`; the model package reads them with the same
class and never imports the training package (as open_clip keeps its model code free of its training code).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import FinetuneError
from ..files import atomic_path, save_tensors_atomic, write_json_atomic
from .videococa import VideoCoCa


class RunDir:
    """A finetuning run directory.

    `run.json`: the base model's `provenance()`, config, step, metrics per epoch; `trained.safetensors`: only the trained
    parameters; `state.pt`: optimizer, step, RNG (exact resume); `log.csv`: step, epoch, losses, lr; `tb/`:
    TensorBoard event files. run.json, trained.safetensors and state.pt are written atomically, run.json last.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.info_path = self.path / "run.json"
        self.trained_path = self.path / "trained.safetensors"
        self.state_path = self.path / "state.pt"
        self.log_path = self.path / "log.csv"
        self.tb_path = self.path / "tb"

    def __str__(self) -> str:
        return str(self.path)

    def can_resume(self) -> bool:
        """Whether a run was saved here with its optimizer state."""
        return self.state_path.is_file()

    def read_info(self, fingerprint: str | None = None, *, against: str = "") -> dict:
        """run.json's content; with `fingerprint`, a FinetuneError (ending in `against`) unless the run was
        finetuned from the base weights with that fingerprint."""
        if not self.info_path.is_file() or not self.trained_path.is_file():
            raise FinetuneError(f"{str(self)!r} is not a finetuning run directory "
                                "(needs run.json and trained.safetensors)")
        info = json.loads(self.info_path.read_text())
        base = info["base"]  # only model, pretrained and fingerprint are read: all that runs before provenance() had
        if fingerprint is not None and base["fingerprint"] != fingerprint:
            raise FinetuneError(f"run {str(self)!r} was finetuned from {base['model']} [{base['pretrained']}] "
                                f"(weights {base['fingerprint']}); {against}")
        return info

    def read_trained(self) -> dict[str, torch.Tensor]:
        """The trained parameters, by name."""
        return load_file(str(self.trained_path))

    def read_state(self) -> dict:
        """state.pt: the optimizer state, step and RNG state of the last save."""
        return torch.load(self.state_path, weights_only=False)

    def save(self, info: dict, trained: dict[str, torch.Tensor], state: dict | None = None) -> None:
        """Write the trained parameters, the training state (if given), then run.json, each atomically."""
        save_tensors_atomic(self.trained_path, {n: t.detach() for n, t in trained.items()})
        if state is not None:
            with atomic_path(self.state_path) as tmp:
                torch.save(state, tmp)
        write_json_atomic(self.info_path, info, indent=1)


def apply_finetuned(model: VideoCoCa, run_dir: str | os.PathLike) -> VideoCoCa:
    """Load a run's trained parameters onto its base model (checked by weight fingerprint)."""
    run = RunDir(run_dir)
    info = run.read_info(model.fingerprint(), against=f"the loaded base is {model.info.name} "
                         f"[{model.info.pretrained}] (weights {model.fingerprint()})")
    trained = run.read_trained()
    cfg = info["config"]
    model.enable_temporal(cfg.get("temporal", "none"), layers=cfg.get("temporal_layers", 1),
                          scaled=cfg.get("temporal_scaled", False))
    params = dict(model.named_parameters())
    unknown = sorted(set(trained) - set(params))
    if unknown:
        raise FinetuneError(f"run {str(run)!r} holds parameters this model does not have: {', '.join(unknown[:5])}")
    with torch.no_grad():
        for n, t in trained.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))
    model.refresh_fingerprint()
    return model
