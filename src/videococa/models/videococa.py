"""VideoCoCa: a frozen open_clip CoCa applied to video by flattening the frame tokens.

Nothing here is trained. The image encoder runs on each of the T frames, the T x N
token grids are flattened into one sequence, and the checkpoint's own attentional
pooler + ln_post run once over it (Yan et al., 2022, "VideoCoCa", Sec. 3).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import re
import string
import warnings
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

from ..deprecation import renamed_keywords
from ..limits import MAX_FRAMES
from ..paths import shorten
from ..text import QA_TEMPLATE, qa_prompt
from ..version import __version__
from ..video.reader import Clip
from ..video.reader import read_video as _read_video
from ..video.sampling import Sampling, check_sampling
from ..video.transforms import Preprocess
from .decoding import METHODS, Caption, GenerationConfig, Method, generate_ids
from .trajectory import TrajectoryMotion
from ..errors import OptionError, check_choice  # noqa: F401 - check_choice is imported from here by others

Pooling = Literal["attentional", "mean"]
POOLINGS: tuple[str, ...] = ("attentional", "mean")
Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
Temporal = Literal["none", "embedding", "transformer", "divided", "trajectory"]
TEMPORALS: tuple[str, ...] = ("none", "embedding", "transformer", "divided", "trajectory")


@dataclass(frozen=True)
class ModelInfo:
    """How a model was made; recorded in indexes, caches and checkpoints."""

    name: str
    """Model config name (an open_clip CoCa config or `videococa-tiny`)."""
    pretrained: str | None
    """Pretrained tag, `hf-hub:` id or weights path; None for random weights."""
    embed_dim: int
    """Size of the contrastive embedding."""
    image_size: int
    """Input frame side in pixels."""
    context_length: int
    """Text tokens the text tower accepts."""
    image_mean: tuple[float, float, float]
    """Per-channel mean used to normalise frames."""
    image_std: tuple[float, float, float]
    """Per-channel std used to normalise frames."""


def _sincos(length: int, width: int) -> torch.Tensor:
    """The Transformer's sinusoidal position table (Vaswani et al., 2017): (length, width), values in [-1, 1]."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]  # (L, 1)
    freq = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))  # (W/2,)
    table = torch.zeros(length, width)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : width // 2]
    return table


class _TemporalBlock(nn.Module):
    """Pre-LN self-attention + MLP over time whose residual branches start at exactly zero.

    `scaled`: each branch's output is multiplied by the input token's RMS (detached), so what the block adds
    grows with the tokens' scale rather than the output weights' (frozen encoder tokens are large: RMS ~9 in
    videococa-tiny, where an unscaled zero-initialised branch stays ~1% of a token; bench/RESULTS.md, issue 24)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, *, scaled: bool = False):
        super().__init__()
        self.scaled = scaled
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
        for layer in (self.attn.out_proj, self.mlp[2]):  # zero output layers: the block is the identity at init
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x) + pos  # (S, T, W); frame positions enter the attention only, not the residual
        if not self.scaled:
            x = x + self.attn(h, h, h, need_weights=False)[0]
            return x + self.mlp(self.ln_2(x))
        rms = x.detach().pow(2).mean(-1, keepdim=True).sqrt()  # (S, T, 1) the input token's scale
        x = x + rms * self.attn(h, h, h, need_weights=False)[0]
        return x + rms * self.mlp(self.ln_2(x))


class TemporalMixer(nn.Module):
    """Factorised temporal self-attention: every token attends to the tokens at its own spatial position in
    the other frames (the temporal half of ViViT's factorised self-attention, Arnab et al., 2021), including
    the per-frame class token, so the pooler can see how each place changes over time.

    Output layers start at zero, so a new mixer is exactly the identity (finetuning starts at zero-shot).
    `scaled`: residual branches scaled by the token's RMS (see `_TemporalBlock`).
    """

    def __init__(self, width: int, *, layers: int = 1, heads: int | None = None,
                 space_pos: torch.Tensor | None = None, scaled: bool = False):
        super().__init__()
        heads = heads or max(1, width // 64)
        self.layers = layers
        self.scaled = scaled
        self.pos = nn.Parameter(_sincos(MAX_FRAMES, width))  # (MAX_FRAMES, W) frame positions, learned from sin-cos
        self.blocks = nn.ModuleList(_TemporalBlock(width, heads, scaled=scaled) for _ in range(layers))
        self.spatial = space_pos is not None
        """Divided space-time attention (TimeSformer, Bertasius et al., 2021): after each temporal block a spatial
        one (each token attends to the others of its frame), and both see every token's spatial position, so the
        blocks can relate where the object is to when: what motion is."""
        if self.spatial:
            self.space_pos = nn.Parameter(space_pos.detach().clone().float())  # (N, W) the image encoder's own
            self.space_blocks = nn.ModuleList(_TemporalBlock(width, heads, scaled=scaled) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, n, w = x.shape
        pos_t = self.pos[:t]  # (T, W)
        if self.spatial:
            pos_t = (pos_t[None] + self.space_pos[:, None]).repeat(b, 1, 1)  # (B*N, T, W): when and where
            pos_s = self.space_pos[None] + self.pos[:t, None]  # (T, N, W)
            pos_s = pos_s.repeat(b, 1, 1)  # (B*T, N, W)
        h = x.transpose(1, 2).reshape(b * n, t, w)  # (B*N, T, W): one sequence over time per spatial token
        for i, block in enumerate(self.blocks):
            h = block(h, pos_t)
            if self.spatial:
                h = h.reshape(b, n, t, w).transpose(1, 2).reshape(b * t, n, w)  # (B*T, N, W): one frame each
                h = self.space_blocks[i](h, pos_s)
                h = h.reshape(b, t, n, w).transpose(1, 2).reshape(b * n, t, w)  # (B*N, T, W)
        return h.reshape(b, n, t, w).transpose(1, 2)  # (B, T, N, W)


def _plain_block(block: nn.Module) -> bool:
    """An open_clip self-attention block whose attention `_self_attention` can run on its own weights."""
    attn = getattr(block, "attn", None)
    return (isinstance(block, ResidualAttentionBlock) and not hasattr(block, "ln_1_kv")
            and isinstance(attn, nn.MultiheadAttention) and attn.batch_first and attn._qkv_same_embed_dim)


def _self_attention(attn: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """`attn(x, x, x)[0]` without a mask, as one qkv linear, fused scaled-dot-product attention and the out
    projection, on the module's own weights. (B, S, W) -> (B, S, W)."""
    b, s, w = x.shape
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)  # (B, S, 3W)
    q, k, v = qkv.view(b, s, 3, attn.num_heads, w // attn.num_heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, S, W/H)
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, s, w)  # (B, S, W)
    return F.linear(out, attn.out_proj.weight, attn.out_proj.bias)


def run_transformer(transformer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """open_clip's vision Transformer over tokens (B, N, W), each block's attention fused (`_self_attention`).

    The same blocks, weights and order as `transformer(x)`; only the attention kernel differs: nn.MultiheadAttention's
    inference fast path runs softmax and two batched matmuls apart, which on ViT-L/14's 257 tokens made the encoder
    1.1-1.5x slower on an AMX CPU (bench/RESULTS.md, encode). Any other kind of block runs open_clip's forward."""
    blocks = transformer.resblocks
    if not getattr(transformer, "batch_first", False) or not all(_plain_block(b) for b in blocks):
        return transformer(x)
    for blk in blocks:
        x = x + blk.ls_1(_self_attention(blk.attn, blk.ln_1(x)))  # (B, N, W)
        x = x + blk.ls_2(blk.mlp(blk.ln_2(x)))
    return x


class VideoCoCa(nn.Module):
    """A video-text model over an open_clip CoCa; every weight is the image model's."""

    def __init__(self, coca: nn.Module, tokenizer, info: ModelInfo, *, precision: Precision = "fp32"):
        super().__init__()
        visual = coca.visual
        if getattr(visual, "attn_pool", None) is None:
            raise OptionError(f"model {info.name!r} has no attentional pooler; VideoCoCa needs a CoCa checkpoint")
        self.coca = coca
        self.tokenizer = tokenizer
        self.info = info
        self.precision: Precision = check_choice(precision, PRECISIONS, "precision")  # type: ignore[assignment]
        self.frame_batch_size = 64
        """Frames per encoder call; bounds activation memory for long or many clips."""
        self.caption_suppress: tuple[str, ...] = ()
        """Words never generated in captions without a prompt (set by a bundled model's generation.json)."""
        self._fingerprint: str | None = None
        self.temporal_embedding: nn.Parameter | None = None
        """(MAX_FRAMES, W) learned per-frame offsets added to frame tokens before pooling; None in zero-shot
        models. Finetuning can add one initialised at zero, so step 0 equals the zero-shot model."""
        self.temporal_mixer: TemporalMixer | None = None
        """Factorised temporal self-attention over the frame tokens before pooling; None in zero-shot models."""
        self.temporal_trajectory: TrajectoryMotion | None = None
        """Learned soft-argmax tracks -> a motion vector added to the frame tokens before pooling; None in
        zero-shot models (see `models.trajectory`)."""

    # ------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        return self.coca.logit_scale.device

    @property
    def sot_token_id(self) -> int:
        return self.tokenizer.sot_token_id

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eot_token_id

    @property
    def preprocess(self) -> Preprocess:
        """This model's frame preprocessing (input size, mean, std): `read_video(..., preprocess=model.preprocess)`,
        or call it on uint8 frames (..., H, W, 3) of any size to get float (..., 3, S, S) model input."""
        info = self.info
        return Preprocess(info.image_size, info.image_mean, info.image_std)

    def read_video(self, path: str | os.PathLike, num_frames: int = 8, **kwargs) -> Clip:
        """`videococa.read_video(path, num_frames, preprocess=self.preprocess, **kwargs)`: a Clip ready for this model."""
        return _read_video(path, num_frames, preprocess=self.preprocess, **kwargs)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context for this model's precision (no-op for fp32)."""
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _check_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Model input (B, T, 3, S, S) float32 on the model's device from float frames already preprocessed, or
        from uint8 frames (B, T, H, W, 3) / (B, T, 3, H, W) of any size, preprocessed here."""
        if not isinstance(frames, torch.Tensor):
            raise TypeError(f"frames must be a torch.Tensor of shape (B, T, 3, H, W), got {type(frames).__name__}")
        if frames.ndim != 5:
            raise OptionError(f"frames must have shape (B, T, 3, H, W), got {tuple(frames.shape)}")
        t = frames.shape[1]
        if not 1 <= t <= MAX_FRAMES:
            raise OptionError(f"frames has T={t} frames per video; VideoCoCa takes 1 to {MAX_FRAMES}")
        if frames.dtype == torch.uint8:
            frames = self.preprocess(frames)  # (B, T, 3, S, S) float32
        if frames.shape[2] != 3:
            raise OptionError(f"frames must have shape (B, T, 3, H, W), got {tuple(frames.shape)}")
        size = self.info.image_size
        if frames.shape[-2:] != (size, size):
            raise OptionError(
                f"frames are {frames.shape[-2]}x{frames.shape[-1]} pixels; model {self.info.name!r} "
                f"needs {size}x{size} float frames (read them with model.read_video(path) or "
                f"read_video(path, preprocess=model.preprocess), or pass uint8 frames of any size)"
            )
        if not frames.is_floating_point():
            raise TypeError(f"frames must be uint8 RGB or a float tensor normalised for the model, got dtype "
                            f"{frames.dtype}")
        return frames.to(self.device, torch.float32)

    # ------------------------------------------------------------------ video
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Per-frame encoder tokens before pooling: (B, T, 3, H, W) -> (B, T, N, W). Frames as in `encode_video`.

        This is the frozen, expensive part; its output is what finetuning caches.
        """
        with torch.inference_mode():
            return self._encode_frames(frames)

    def _encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """`encode_frames` in the caller's grad mode."""
        frames = self._check_frames(frames)
        b, t = frames.shape[:2]
        visual = self.coca.visual
        flat = frames.flatten(0, 1)  # (B*T, 3, H, W)
        outs = []
        with self.autocast():
            for chunk in flat.split(self.frame_batch_size):
                x = visual._embeds(chunk)  # (b*t, N, W)
                outs.append(run_transformer(visual.transformer, x))  # (b*t, N, W)
        return torch.cat(outs).unflatten(0, (b, t))  # (B, T, N, W)

    @property
    def temporal(self) -> str:
        """Which temporal modules the model has: none, embedding, transformer, divided or trajectory
        (see `enable_temporal`)."""
        if self.temporal_trajectory is not None:
            return "trajectory"
        if self.temporal_mixer is not None:
            return "divided" if self.temporal_mixer.spatial else "transformer"
        return "none" if self.temporal_embedding is None else "embedding"

    def enable_temporal(self, kind: Temporal, *, layers: int = 1, scaled: bool = False) -> None:
        """Add new temporal modules that leave every output unchanged until trained.

        embedding: a per-frame embedding (MAX_FRAMES, W) at zero. transformer: the same plus a `TemporalMixer`
        of `layers` blocks whose output layers are zero. divided: the same mixer with a spatial block after each
        temporal one, both given each token's spatial position (the image encoder's positional embedding).
        trajectory: learned soft-argmax tracks over the patch grid whose velocities make one motion vector added
        to every frame token (`TrajectoryMotion`; its output layer is zero, and it is always token-scaled).
        none: nothing. `scaled`: the mixer's residual branches are multiplied by each token's RMS (`_TemporalBlock`).
        """
        check_choice(kind, TEMPORALS, "temporal variant")
        width = self.coca.visual.transformer.width
        if kind == "trajectory":
            if self.temporal_trajectory is None:
                grid = tuple(getattr(self.coca.visual, "grid_size", ()))
                if len(grid) != 2:
                    raise OptionError(f"--temporal trajectory needs a ViT with a patch grid; {self.info.name!r} "
                                      "has none")
                self.temporal_trajectory = TrajectoryMotion(width, grid).to(self.device)  # type: ignore[arg-type]
            self.refresh_fingerprint()
            return
        if kind != "none" and self.temporal_embedding is None:
            self.temporal_embedding = nn.Parameter(torch.zeros(MAX_FRAMES, width, device=self.device))
        if kind in ("transformer", "divided") and self.temporal_mixer is None:
            space = self.coca.visual.positional_embedding if kind == "divided" else None  # (N, W)
            self.temporal_mixer = TemporalMixer(width, layers=layers, space_pos=space, scaled=scaled).to(self.device)
        self.refresh_fingerprint()

    def add_temporal(self, frame_tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, N, W) frame tokens after the model's temporal modules (identity in a zero-shot model)."""
        x = frame_tokens
        if self.temporal_embedding is not None:
            x = x + self.temporal_embedding[: x.shape[1], None, :]  # (B, T, N, W)
        if self.temporal_mixer is not None:
            x = self.temporal_mixer(x)  # (B, T, N, W)
        if self.temporal_trajectory is not None:
            x = self.temporal_trajectory(x)  # (B, T, N, W)
        return x

    def pool(self, frame_tokens: torch.Tensor, *, per_video: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable flattened attentional pooling: (B, T, N, W) -> embedding (B, E) before normalising,
        generative tokens (B, Q-1, E). Runs in the caller's grad mode and autocast: finetuning trains through it;
        `encode_video` and `pool_frame_tokens` run it under inference_mode. `per_video`: one pooler pass per
        video (see _pool_normalized)."""
        visual = self.coca.visual
        x = self.add_temporal(frame_tokens).flatten(1, 2)  # (B, T*N, W)
        pooled, video_tokens = [], []
        for video in x.split(1) if per_video else [x]:
            p, t = visual._pool(video)  # attn_pool -> ln_post -> query 0 (b, E'), queries 1.. (b, Q-1, E)
            if visual.proj is not None:
                p = p @ visual.proj  # (b, E)
            pooled.append(p)
            video_tokens.append(t)
        return torch.cat(pooled), torch.cat(video_tokens)  # (B, E), (B, Q-1, E)

    @torch.inference_mode()
    def pool_frame_tokens(self, frame_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`pool` for inference: (B, T, N, W) -> normalised embedding (B, E), generative tokens (B, Q-1, E).

        Under inference_mode, like `encode_video`: what it returns is for ranking and decoding, never for a
        loss (finetuning trains through `pool`)."""
        return self._pool_normalized(frame_tokens)

    def _pool_normalized(self, frame_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`pool_frame_tokens` in the caller's grad mode: one pass per video, embedding normalised, fp32."""
        if frame_tokens.ndim != 4:
            raise OptionError(f"frame_tokens must have shape (B, T, N, W), got {tuple(frame_tokens.shape)}")
        with self.autocast():
            # One video at a time: nn.MultiheadAttention(batch_first) transposes its inputs, and for
            # B > 1 the CPU linear on that strided input copies the weight per batch element
            # (19x slower in bf16, 1.9x in fp32; bench/RESULTS.md). With B = 1 it is a plain matmul.
            pooled, video_tokens = self.pool(frame_tokens.to(self.device, torch.float32), per_video=True)
            return F.normalize(pooled.float(), dim=-1), video_tokens.float()  # (B, E), (B, Q-1, E)

    def encode_video(
        self,
        frames: torch.Tensor,
        *,
        pooling: Pooling = "attentional",
        return_tokens: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Video embeddings (B, E), L2-normalised, from frames (B, T, 3, S, S).

        frames: either float32 model input at the model's size S (from `model.read_video` or
        `read_video(..., preprocess=model.preprocess)`), used as given, or raw uint8 RGB frames of any size,
        channels last (B, T, H, W, 3) or first (B, T, 3, H, W), which go through `model.preprocess` first.

        `attentional` (the paper's method): one pooler pass over all T*N frame tokens.
        `mean` (baseline): each frame's own image embedding, averaged and re-normalised.
        With `return_tokens=True` also returns the generative tokens (B, Q-1, E) for the decoder.
        """
        check_choice(pooling, POOLINGS, "pooling")
        with torch.inference_mode():
            if pooling == "attentional":
                emb, video_tokens = self._pool_normalized(self._encode_frames(frames))
            else:
                emb, video_tokens = self._encode_mean(frames)
        return (emb, video_tokens) if return_tokens else emb

    def _encode_mean(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean-pooling baseline in the caller's grad mode: (B, E) normalised, (B, Q-1, E)."""
        frames = self._check_frames(frames)
        b, t = frames.shape[:2]
        embs, toks = [], []
        with self.autocast():
            for chunk in frames.flatten(0, 1).split(self.frame_batch_size):
                e, tk = self.coca._encode_image(chunk, normalize=True)  # (b*t, E), (b*t, Q-1, E)
                embs.append(e.float())
                toks.append(tk.float())
        emb = torch.cat(embs).unflatten(0, (b, t)).mean(1)  # (B, E)
        video_tokens = torch.cat(toks).unflatten(0, (b, t)).mean(1)  # (B, Q-1, E)
        return F.normalize(emb, dim=-1), video_tokens

    # ------------------------------------------------------------------ text
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids (N, context_length); over-long texts are truncated with a warning."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not a single string; wrap it: [text]")
        texts = list(texts)
        if not texts:
            raise OptionError("texts is empty: give at least one string")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is {type(text).__name__}, not a string")
        limit = self.info.context_length
        too_long = [t for t in texts if len(self.tokenizer.encode(t)) + 2 > limit]
        if too_long:
            sample = too_long[0] if len(too_long[0]) <= 60 else too_long[0][:57] + "..."
            warnings.warn(
                f"{len(too_long)} text(s) longer than the model's {limit} tokens were truncated "
                f"(first: {sample!r})",
                stacklevel=3,
            )
        return self.tokenizer(texts).to(self.device)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Text embeddings (N, E), L2-normalised, with the open_clip tokenizer."""
        token_ids = self.tokenize(texts)
        with torch.inference_mode(), self.autocast():
            emb = self.coca.encode_text(token_ids, normalize=False)
        return F.normalize(emb.float(), dim=-1)

    # ------------------------------------------------------------------ generation
    @renamed_keywords(tokens="video_tokens")
    def generate(
        self,
        frames: torch.Tensor | None = None,
        *,
        video_tokens: torch.Tensor | None = None,
        config: GenerationConfig | None = None,
        prompt: str | Sequence[str] | None = None,
        return_details: bool = False,
        **overrides,
    ) -> list[str] | list[Caption]:
        """Captions (or continuations of `prompt`) for a batch of videos.

        Give frames (B, T, 3, H, W) as `encode_video` takes them (float model input, or uint8 of any size) or
        `video_tokens` (B, Q-1, E) from `encode_video(..., return_tokens=True)`, so one encoding serves many
        decodings (`tokens=` is the deprecated name of `video_tokens=`). How to decode is a `GenerationConfig` (default: beam search, 6 beams, up to
        30 new tokens); any of its fields may also be given by name (`method="greedy", max_len=20`) and
        override the config. `suppress=None` (the default) uses the model's own list for captions without a
        prompt (videococa-tiny: its question-answer format). Returns strings, or Caption records with token
        ids and scores when `return_details=True`.
        """
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(GenerationConfig)})
        if unknown:
            raise TypeError(f"generate() got unexpected keyword arguments: {', '.join(unknown)}")
        cfg = dataclasses.replace(config or GenerationConfig(), **overrides)
        cfg.check()
        image_embs = self._video_tokens(frames, video_tokens)
        b = image_embs.shape[0]
        method, max_len, suppress = cfg.method, cfg.max_len, cfg.suppress
        prompts = self._prompts(prompt, b)
        prefixes = [[self.sot_token_id, *self.tokenizer.encode(p)] for p in prompts]
        limit = self.info.context_length
        for p, ids in zip(prompts, prefixes):
            if len(ids) + max_len - 1 > limit:
                raise OptionError(
                    f"prompt {shorten(p)!r} is {len(ids) - 1} tokens; with max_len={max_len} that exceeds the model's "
                    f"{limit}-token context (shorten the prompt or lower max_len)"
                )
        if suppress is None:
            suppress = self.caption_suppress if prompt is None else ()
        suppress_ids = torch.tensor(self._single_token_ids(suppress), dtype=torch.long, device=self.device)
        generator = None
        if method in ("top_k", "top_p"):
            generator = torch.Generator(device=self.device)
            generator.manual_seed(cfg.seed if cfg.seed is not None else torch.seed())
        results: list[Caption | None] = [None] * b
        groups: dict[int, list[int]] = {}  # videos whose prefixes have the same length decode together
        for i, ids in enumerate(prefixes):
            groups.setdefault(len(ids), []).append(i)
        with torch.inference_mode(), self.autocast():
            for idx in groups.values():
                prefix = torch.tensor([prefixes[i] for i in idx], device=self.device)  # (b, P)
                out = generate_ids(self.coca, image_embs[idx], prefix, eot=self.eot_token_id, config=cfg,
                                   generator=generator, suppress=suppress_ids)
                for i, (ids, score) in zip(idx, out):
                    results[i] = Caption(self.decode_ids(ids), ids, score)
        return results if return_details else [r.text for r in results]  # type: ignore[union-attr]

    @renamed_keywords(tokens="video_tokens")
    def answer(
        self,
        frames: torch.Tensor | None = None,
        questions: str | Sequence[str] = (),
        *,
        video_tokens: torch.Tensor | None = None,
        template: str = QA_TEMPLATE,
        method: Method = "greedy",
        max_len: int = 10,
        **kwargs,
    ) -> list[str]:
        """Answer one question per video (a single string asks every video the same), zero-shot or finetuned.

        frames as `encode_video` takes them (float model input, or uint8 of any size), or `video_tokens` from it.

        The question goes into `template`, the decoder continues it, and the continuation is
        normalised (lowercase, trimmed, punctuation removed).
        """
        if "{}" not in template:
            raise OptionError(f"template must contain '{{}}' where the question goes, got {template!r}")
        image_embs = self._video_tokens(frames, video_tokens)
        qs = [questions] * image_embs.shape[0] if isinstance(questions, str) else list(questions)
        if len(qs) != image_embs.shape[0] or not qs:
            raise OptionError(f"give one question per video: {image_embs.shape[0]} videos, {len(qs)} questions")
        for q in qs:
            if not isinstance(q, str) or not q.strip():
                raise OptionError(f"questions must be non-empty strings, got {q!r}")
        kwargs.setdefault("min_len", 1)
        texts = self.generate(video_tokens=image_embs, prompt=[qa_prompt(q, template) for q in qs], method=method,
                              max_len=max_len, **kwargs)
        return [normalize_answer(t) for t in texts]

    def _video_tokens(self, frames: torch.Tensor | None, video_tokens: torch.Tensor | None) -> torch.Tensor:
        """The decoder's input (B, Q-1, E): `video_tokens` as given (checked), or encoded from `frames`."""
        if (frames is None) == (video_tokens is None):
            raise OptionError("give either frames (B, T, 3, H, W) or video_tokens (B, Q-1, E), not both or neither")
        if frames is not None:
            _, video_tokens = self.encode_video(frames, return_tokens=True)
        assert video_tokens is not None
        if video_tokens.ndim != 3 or video_tokens.shape[-1] != self.coca.text_decoder.width:
            raise OptionError(
                f"video_tokens must have shape (B, Q-1, {self.coca.text_decoder.width}) as encode_video(..., "
                f"return_tokens=True) returns, got {tuple(video_tokens.shape)}"
            )
        return video_tokens.to(self.device)

    def _single_token_ids(self, words: Sequence[str]) -> list[int]:
        if isinstance(words, str):
            raise TypeError("suppress must be a list of words, not a single string; wrap it: [word]")
        ids = []
        for word in words:
            word_ids = self.tokenizer.encode(word)
            if len(word_ids) != 1:
                raise OptionError(f"suppress word {word!r} is {len(word_ids)} tokens; give words that are one token "
                                  "each")
            ids.append(word_ids[0])
        return ids

    @staticmethod
    def _prompts(prompt: str | Sequence[str] | None, b: int) -> list[str]:
        if prompt is None:
            return [""] * b
        if isinstance(prompt, str):
            return [prompt] * b
        prompts = list(prompt)
        if len(prompts) != b:
            raise OptionError(f"give one prompt per video: {b} videos, {len(prompts)} prompts")
        return prompts

    def decode_ids(self, ids: Sequence[int]) -> str:
        """Token ids -> text, without start/end tokens and with whitespace cleaned."""
        specials = {self.sot_token_id, self.eot_token_id}
        text = self.tokenizer.decode([int(i) for i in ids if int(i) not in specials])
        return " ".join(text.split())

    @property
    def logit_scale(self) -> float:
        """The checkpoint's learned contrastive temperature, exp(logit_scale)."""
        return float(self.coca.logit_scale.exp())

    def provenance(self, *, sampling: Sampling = "uniform", **settings) -> dict:
        """Which model made an artefact (index, embeddings, feature cache, evaluation): name, pretrained tag,
        precision, weights fingerprint, videococa version and the frame `sampling` the artefact was read with
        (artefacts that record none were read uniformly), then `settings` (frames, pooling, ...), which may
        override any of them. Every artefact records this one dict."""
        return {"model": self.info.name, "pretrained": self.info.pretrained or "", "precision": self.precision,
                "fingerprint": self.fingerprint(), "videococa": __version__, "sampling": check_sampling(sampling),
                **settings}

    def fingerprint(self) -> str:
        """A short hash of the weights (names, shapes and a strided sample of every tensor) and precision.

        Caches and indexes record it and refuse to be reused with a model whose weights differ.
        Computed once per model; call `refresh_fingerprint()` after changing weights in place.
        """
        if self._fingerprint is None:
            h = hashlib.sha256(self.precision.encode())
            tensors = dict(self.coca.state_dict())
            if self.temporal_embedding is not None:
                tensors["temporal_embedding"] = self.temporal_embedding
            for name in ("temporal_mixer", "temporal_trajectory"):
                module = getattr(self, name)
                if module is not None:
                    tensors.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
            for name, t in sorted(tensors.items()):
                flat = t.detach().reshape(-1)
                sample = flat[:: max(1, flat.numel() // 4096)][:4096].float().cpu().numpy()
                h.update(f"{name}{tuple(t.shape)}".encode())
                h.update(sample.round(5).tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def refresh_fingerprint(self) -> str:
        """Recompute `fingerprint()` (after weights were changed in place)."""
        self._fingerprint = None
        return self.fingerprint()

    def extra_repr(self) -> str:
        return f"name={self.info.name!r}, pretrained={self.info.pretrained!r}, precision={self.precision!r}"


_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(text: str) -> str:
    """Answer normalisation for exact-match QA: lowercase, punctuation removed, whitespace collapsed."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())
