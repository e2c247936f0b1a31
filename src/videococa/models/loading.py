"""Resolve a model name + pretrained source to a loaded VideoCoCa.

One place resolves everything (like open_clip's `create_model`): open_clip CoCa config
names with their pretrained tags, `hf-hub:org/repo`, local weight files, and the
bundled `videococa-tiny`. Loading is strict: every key must match in name and shape.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import socket
import warnings
from typing import Literal
from pathlib import Path
from urllib.parse import urlparse

import open_clip
from open_clip.factory import load_state_dict as _open_clip_load_state_dict
from open_clip.model import convert_weights_to_lp
import torch
from torch import nn

from ..errors import CheckpointError, ModelNotFoundError, OptionError, WeightsUnavailableError
from .finetuned import apply_finetuned
from .precision import PRECISION_CHOICES, resolve_precision
from .videococa import ModelInfo, Precision, VideoCoCa, check_choice

TINY_NAME = "videococa-tiny"
TINY_DIR = Path(__file__).parent / "tiny"
"""Holds the bundled tiny model: `config.json` (open_clip model config) and `model.safetensors`."""
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
HF_PREFIX = "hf-hub:"
# Files an open_clip hub repo may hold, safest first (as open_clip's own downloader prefers).
HF_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- registry
@functools.lru_cache(maxsize=1)
def _coca_config_names() -> tuple[str, ...]:
    """open_clip configs that are CoCa models with the CLIP BPE text tower we decode with."""
    names = []
    for name in open_clip.list_models():
        cfg = open_clip.get_model_config(name)
        if cfg and "multimodal_cfg" in cfg and not cfg.get("text_cfg", {}).get("hf_model_name"):
            names.append(name)
    return tuple(names)


def _tiny_available() -> bool:
    return (TINY_DIR / "config.json").is_file() and (TINY_DIR / "model.safetensors").is_file()


def list_models() -> dict[str, list[str]]:
    """Loadable model names, each with its known pretrained tags (local files and hf-hub ids also work)."""
    out: dict[str, list[str]] = {}
    if _tiny_available():
        out[TINY_NAME] = ["bundled"]
    for name in _coca_config_names():
        out[name] = list(open_clip.list_pretrained_tags_by_model(name))
    return out


def _model_config(name: str) -> dict:
    if name == TINY_NAME:
        if not _tiny_available():
            raise ModelNotFoundError(
                f"model {TINY_NAME!r} is not bundled in this installation (expected {TINY_DIR}/config.json "
                f"and model.safetensors). Train it with `python scripts/train_tiny.py`, or load an open_clip "
                f"CoCa such as 'coca_ViT-B-32'."
            )
        return json.loads((TINY_DIR / "config.json").read_text())
    known = _coca_config_names()
    if name not in known:
        hint = ""
        if name.startswith(HF_PREFIX):
            hint = f" To load weights from the hub, pass the config name and pretrained={name!r}."
        raise ModelNotFoundError(
            f"unknown model {name!r}. Loadable models: {', '.join([TINY_NAME, *known])}.{hint}"
        )
    return open_clip.get_model_config(name)


# --------------------------------------------------------------------------- weights
def _looks_like_path(source: str) -> bool:
    return source.lower().endswith(WEIGHT_SUFFIXES) or os.sep in source or source.startswith((".", "~"))


def _hub_unreachable_reason(endpoint: str) -> str | None:
    """Why the hub cannot be reached right now, or None if a TCP connection opens (3 s limit)."""
    from huggingface_hub import constants as hf_constants

    if hf_constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    parsed = urlparse(endpoint)
    host, port = parsed.hostname or "huggingface.co", parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=3):
            return None
    except OSError as exc:
        return f"{host} cannot be reached ({exc.strerror or exc})"


def _offline_message(what: str, source: str, why: str, name: str) -> str:
    return (
        f"Could not get the pretrained weights {what} for model {name!r}: {why}. "
        f"They are not in the local Hugging Face cache either. To use them, run once on a machine with "
        f"internet access (the download is cached under ~/.cache/huggingface), or download the weights file "
        f"yourself (open_clip_model.safetensors or open_clip_pytorch_model.bin from the hub repo {source}) "
        f"and pass its path: videococa.load_model({name!r}, pretrained='/path/to/open_clip_model.safetensors'). "
        f"Offline, the bundled model works with no download: load_model('{TINY_NAME}')."
    )


def _download_from_hub(repo_id: str, filenames: tuple[str, ...], *, name: str, what: str) -> str:
    """Path of the first of `filenames` in `repo_id`: from the local cache, else downloaded."""
    from huggingface_hub import constants as hf_constants
    from huggingface_hub import hf_hub_download

    for filename in filenames:  # cache first: works offline and costs no request
        try:
            return hf_hub_download(repo_id, filename, local_files_only=True)
        except Exception:  # not cached (the hub client raises several types for this)
            continue
    why = _hub_unreachable_reason(hf_constants.ENDPOINT)
    if why is not None:
        raise WeightsUnavailableError(_offline_message(what, repo_id, why, name))
    errors = []
    for filename in filenames:
        try:
            return hf_hub_download(repo_id, filename)
        except Exception as exc:  # noqa: BLE001 - summarised for the user below
            errors.append(f"{filename}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    raise WeightsUnavailableError(_offline_message(what, repo_id, "; ".join(errors), name))


def _resolve_weights(name: str, pretrained: str) -> str:
    """A local file path holding the weights that `pretrained` names."""
    if pretrained.startswith(HF_PREFIX):
        repo_id = pretrained[len(HF_PREFIX):].strip("/")
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
            raise ModelNotFoundError(f"pretrained={pretrained!r} is not of the form 'hf-hub:org/repo'")
        return _download_from_hub(repo_id, HF_WEIGHT_FILES, name=name, what=f"{pretrained!r}")
    if _looks_like_path(pretrained) or Path(pretrained).exists():
        path = Path(pretrained).expanduser()
        if not path.exists():
            raise CheckpointError(f"weights file {str(path)!r} does not exist")
        if path.is_dir():
            raise CheckpointError(f"weights path {str(path)!r} is a directory; give the weights file inside it")
        return str(path)
    tags = list(open_clip.list_pretrained_tags_by_model(name))
    if pretrained not in tags:
        raise ModelNotFoundError(
            f"unknown pretrained tag {pretrained!r} for model {name!r}. Known tags: "
            f"{', '.join(tags) or 'none'}; or give a local weights file (.safetensors, .bin, .pt) or 'hf-hub:org/repo'."
        )
    cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if cfg.get("hf_hub"):
        repo_id, filename = os.path.split(cfg["hf_hub"])  # 'org/repo/' or 'org/repo/file.bin'
        files = (filename,) if filename else HF_WEIGHT_FILES
        return _download_from_hub(repo_id, files, name=name, what=f"{pretrained!r}")
    try:  # URL-hosted tags: open_clip's own downloader (fails fast offline)
        return open_clip.download_pretrained(cfg)
    except Exception as exc:  # noqa: BLE001
        raise WeightsUnavailableError(
            _offline_message(repr(pretrained), cfg.get("url", "?"), f"{type(exc).__name__}: {exc}", name)
        ) from None


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors, or a torch .bin/.pt/.pth (plain or {'state_dict': ...})."""
    try:
        sd = _open_clip_load_state_dict(path)  # handles 'state_dict' wrappers and 'module.' prefixes
    except Exception as exc:  # noqa: BLE001 - corrupt or foreign files raise many types
        raise CheckpointError(
            f"could not read weights file {path!r}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        ) from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"weights file {path!r} does not hold a state dict of tensors")
    return sd


def load_state_dict_strict(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Load `sd` into `model`, or raise CheckpointError listing every missing, unexpected and mis-shaped key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in sd and sd[k].shape != v.shape
    ]
    problems = []
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
        if keys:
            shown = ", ".join(keys[:20]) + (f", ... ({len(keys) - 20} more)" if len(keys) > 20 else "")
            problems.append(f"{len(keys)} {label}: {shown}")
    if problems:
        raise CheckpointError(f"weights file {source!r} does not fit the model: " + "; ".join(problems))
    model.load_state_dict(sd, strict=True)


# --------------------------------------------------------------------------- devices
def resolve_device(device: str | torch.device) -> torch.device:
    """Validate 'cpu', 'cuda' or 'cuda:N' and check that it exists here."""
    text = str(device)
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise OptionError(f"unknown device {text!r}; choose one of: cpu, cuda, cuda:N")
    dev = torch.device(text)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError(f"device {text!r} was asked for, but no CUDA GPU is available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise OptionError(f"device {text!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    return dev


# --------------------------------------------------------------------------- entry point
def _init_uninitialised(coca: nn.Module) -> None:
    """open_clip leaves text_decoder.text_projection as torch.empty; give random models finite weights."""
    proj = coca.text_decoder.text_projection
    if proj is not None:
        nn.init.normal_(proj, std=coca.text_decoder.width ** -0.5)


def load_model(
    name: str | None = None,
    pretrained: str | None = None,
    *,
    device: str | torch.device = "cpu",
    precision: Precision | Literal["auto"] = "auto",
    finetuned: str | os.PathLike | None = None,
) -> VideoCoCa:
    """Load a CoCa checkpoint as a VideoCoCa model (no video training needed).

    finetuned: a run directory of `videococa finetune`; its trained poolers/decoder are applied on top of
        the base, which must be the one it was trained from (checked by weight fingerprint).

    name: an open_clip CoCa config ('coca_ViT-B-32', 'coca_ViT-L-14', ...) or 'videococa-tiny' (the default:
        bundled, so it works offline).
    pretrained: an open_clip tag ('laion2b_s13b_b90k', 'mscoco_finetuned_laion2b_s13b_b90k'),
        'hf-hub:org/repo', or a local .safetensors/.bin/.pt file. None gives random weights
        (with a warning) for open_clip configs, and the bundled weights for videococa-tiny.
    precision: 'auto' (bf16 where the device multiplies it natively: CUDA, or CPUs with AMX / AVX512-BF16;
        fp32 elsewhere; the environment variable VIDEOCOCA_PRECISION overrides what 'auto' picks), 'fp32' or
        'bf16' (which warns, with the measured cost, on a CPU that only emulates it).
    """
    name = name or TINY_NAME
    check_choice(precision, PRECISION_CHOICES, "precision")
    dev = resolve_device(device)
    precision = resolve_precision(precision, dev)
    cfg = _model_config(name)
    weights, pretrained = _weights_file(name, pretrained)
    coca = _build_coca(cfg, weights, precision)
    info = _model_info(name, pretrained, cfg)
    tokenizer = open_clip.SimpleTokenizer(context_length=info.context_length)
    model = VideoCoCa(coca, tokenizer, info, precision=precision).to(dev)
    if name == TINY_NAME and (TINY_DIR / "generation.json").is_file():
        gen = json.loads((TINY_DIR / "generation.json").read_text())
        model.caption_suppress = tuple(gen.get("caption_suppress", ()))
    if finetuned is not None:
        apply_finetuned(model, finetuned)
    return model


def _weights_file(name: str, pretrained: str | None) -> tuple[str | None, str | None]:
    """(weights file or None for random weights, the pretrained tag to record) for `load_model(name, pretrained)`."""
    if name == TINY_NAME:
        weights = str(TINY_DIR / "model.safetensors") if pretrained in (None, "bundled") else None
        if weights is None:
            weights = _resolve_weights(name, pretrained)
        return weights, pretrained or "bundled"
    if pretrained is None:
        warnings.warn(
            f"load_model({name!r}) without `pretrained` gives RANDOM weights; pass a tag such as "
            f"'laion2b_s13b_b90k' or a weights file for a useful model",
            stacklevel=3,  # the caller of load_model
        )
        return None, None
    return _resolve_weights(name, pretrained), pretrained


def _build_coca(cfg: dict, weights: str | None, precision: Precision) -> nn.Module:
    """open_clip's own CoCa class from `cfg`, with `weights` loaded strictly (random when None), frozen, in eval
    mode, in `precision`."""
    model_cfg = {k: v for k, v in cfg.items() if k != "custom_text"}  # as open_clip.create_model does
    # bf16 is open_clip's own mixed precision: LayerNormFp32 layers (cast_dtype) and matmul/conv
    # weights stored in bf16, run under autocast. Autocast alone re-casts every fp32 weight on
    # every call and measured slower than fp32 on CPU (bench/RESULTS.md).
    cast_dtype = torch.bfloat16 if precision == "bf16" else None
    coca = open_clip.CoCa(**model_cfg, cast_dtype=cast_dtype)  # open_clip's own model class and config
    if weights is None:
        _init_uninitialised(coca)
    else:
        load_state_dict_strict(coca, read_state_dict(weights), weights)
    if cast_dtype is not None:
        convert_weights_to_lp(coca, cast_dtype)
    return coca.eval().requires_grad_(False)


def _model_info(name: str, pretrained: str | None, cfg: dict) -> ModelInfo:
    """What is recorded of a loaded model: its config's sizes and its pretrained tag's preprocessing."""
    size = cfg["vision_cfg"]["image_size"]
    tag_cfg = open_clip.get_pretrained_cfg(name, pretrained) if pretrained else {}  # preprocessing of a tag
    return ModelInfo(
        name=name,
        pretrained=pretrained,
        embed_dim=cfg["embed_dim"],
        image_size=size if isinstance(size, int) else size[0],
        context_length=cfg["text_cfg"].get("context_length", 77),
        image_mean=tuple(tag_cfg.get("mean") or open_clip.OPENAI_DATASET_MEAN),
        image_std=tuple(tag_cfg.get("std") or open_clip.OPENAI_DATASET_STD),
    )
