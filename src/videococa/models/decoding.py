"""Text generation over open_clip CoCa's text tower and multimodal decoder, with KV caches.

open_clip's `CoCa.generate` re-runs the whole text tower and decoder for every new token and
needs `transformers<4.56`. Here each layer keeps the keys and values of earlier positions, the
decoder's cross-attention keys/values over the image tokens are computed once per video, and
beams of one video share them (beams are folded into the query axis rather than copied).

Only open_clip's own submodules and weights are used (`ln_1`, `ln_2`, the activation, `ls_*`, the
attention and MLP projections); `decoder_hidden` and the tests hold the cached path to open_clip's full forward.

A step streams every weight of the text tower and decoder once (~132M for coca_ViT-B-32), so at small
batches its time is set by memory bandwidth (bench/caption.py measures that bound). The weights are therefore
held in the compute dtype (`DecoderWeights`: bf16 copies made once per model, not an autocast cast per call),
the cache is preallocated and written in place, and only the last position is projected to the vocabulary.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import OptionError, check_choice

Method = Literal["greedy", "beam", "top_k", "top_p"]
METHODS: tuple[str, ...] = ("greedy", "beam", "top_k", "top_p")


@dataclass
class Caption:
    """One generated text."""

    text: str
    """The decoded text, without the prompt, start/end tokens or extra whitespace."""
    token_ids: list[int]
    """Generated token ids after the prompt, without the end token."""
    score: float
    """Sum of log-probabilities of the generated tokens (end token included); for beam
    search divided by length ** length_penalty, the score beams are ranked by."""


def decoder_hidden(decoder: nn.Module, image_embs: torch.Tensor, text_embs: torch.Tensor) -> torch.Tensor:
    """The multimodal decoder's hidden states before the vocabulary projection (no cache).

    image_embs (B, Q, E) generative image tokens; text_embs (B, L, W) unimodal text tokens.
    The same submodule calls as `MultimodalTransformer.forward`, stopping at `ln_final`.
    """
    seq_len = text_embs.shape[1]
    x = text_embs
    for block, cross in zip(decoder.resblocks, decoder.cross_attn):
        x = block(x, attn_mask=decoder.attn_mask[:seq_len, :seq_len])  # causal self-attention
        x = cross(x, k_x=image_embs, v_x=image_embs)  # attends to every image token
    return decoder.ln_final(x)  # (B, L, W)


# --------------------------------------------------------------------------- weights in the compute dtype
class _Linear:
    """One linear layer's weight and bias in the dtype generation computes in.

    fp32: open_clip's own tensors (views, so in-place changes show). bf16: copies made once, so a step does not
    cast every weight as autocast does (autocast casts a weight at each call under inference_mode: 60% of a
    bf16 step at batch 1), and on CPUs with oneDNN packed into its blocked layout, which multiplies a few rows
    at twice the speed of `F.linear` (AMX / AVX512-BF16; outputs equal `F.linear`'s for up to 32 rows,
    `test_packed_linear_equals_f_linear`). Inputs are cast to the dtype as autocast would."""

    __slots__ = ("w", "b", "packed", "dtype")

    def __init__(self, w: torch.Tensor, b: torch.Tensor | None, dtype: torch.dtype, *, pack: bool = False):
        self.dtype = dtype
        self.w = w.detach().to(dtype)
        self.b = None if b is None else b.detach().to(dtype)
        self.packed = _pack(self.w) if pack else None
        if self.packed is not None:
            self.w = None  # the packed copy replaces it: one copy of the weights in memory

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype)
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.b, "none", [], "")
        return F.linear(x, self.w, self.b)


def _pack(w: torch.Tensor) -> torch.Tensor | None:
    """w (out, in) in oneDNN's blocked layout for a few input rows, or None where that is unavailable."""
    if w.device.type != "cpu" or w.dtype != torch.bfloat16 or not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(w, 1)
    except (AttributeError, RuntimeError):  # a torch without the op, or oneDNN without bf16 support
        return None


class _Block:
    """A ResidualAttentionBlock's modules without weights (norms, activation) and its linear layers as
    `_Linear`s; `qkv` is the query projection only in cross-attention (keys and values are made once per video)."""

    def __init__(self, block: nn.Module, dtype: torch.dtype, pack: bool, *, cross: bool = False):
        attn = block.attn
        e = attn.embed_dim
        self.heads = attn.num_heads
        self.ln_1, self.ln_2, self.act = block.ln_1, block.ln_2, block.mlp.gelu
        # layer scales (none in released CoCa weights): skipped when they are the identity
        self.ls_1 = None if isinstance(block.ls_1, nn.Identity) else block.ls_1
        self.ls_2 = None if isinstance(block.ls_2, nn.Identity) else block.ls_2
        w, b = attn.in_proj_weight, attn.in_proj_bias
        self.qkv = _Linear(w[:e] if cross else w, b[:e] if cross else b, dtype, pack=pack)
        self.kv = _Linear(w[e:], b[e:], dtype) if cross else None  # (2E, E): over all image tokens, unpacked
        self.ln_1_kv = block.ln_1_kv if cross else None
        self.out = _Linear(attn.out_proj.weight, attn.out_proj.bias, dtype, pack=pack)
        self.fc = _Linear(block.mlp.c_fc.weight, block.mlp.c_fc.bias, dtype, pack=pack)
        self.proj = _Linear(block.mlp.c_proj.weight, block.mlp.c_proj.bias, dtype, pack=pack)

    def residual(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """open_clip's residual order after the attention branch (`attended`, the out-projected attention of
        ln_1(x)): x + ls_1(attended), then x + ls_2(mlp(ln_2(x)))."""
        x = x + (attended if self.ls_1 is None else self.ls_1(attended))
        h = self.proj(self.act(self.fc(self.ln_2(x))))
        return x + (h if self.ls_2 is None else self.ls_2(h))


class DecoderWeights:
    """The text tower's and multimodal decoder's weights in one compute dtype (see `_Linear`)."""

    def __init__(self, coca: nn.Module, dtype: torch.dtype, *, pack: bool = True):
        pack = pack and dtype == torch.bfloat16
        self.dtype = dtype
        self.text = [_Block(b, dtype, pack) for b in coca.text.transformer.resblocks]
        self.dec = [_Block(b, dtype, pack) for b in coca.text_decoder.resblocks]
        self.cross = [_Block(b, dtype, pack, cross=True) for b in coca.text_decoder.cross_attn]
        proj = coca.text_decoder.text_projection  # (W, V)
        # fp32 keeps open_clip's `x @ text_projection`; bf16 projects with the (V, W) copy, packed
        self.vocab = None if dtype == torch.float32 else _Linear(proj.t(), None, dtype, pack=pack)
        self.key = weights_key(coca)


def weights_key(coca: nn.Module) -> tuple:
    """Changes whenever a weight of the text tower or decoder is replaced or changed in place."""
    params = [*coca.text.parameters(), *coca.text_decoder.parameters()]
    return tuple((p.data_ptr(), p._version) for p in params)


_PREPARED: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def decoder_weights(coca: nn.Module, dtype: torch.dtype, *, pack: bool = True) -> DecoderWeights:
    """`DecoderWeights` of `coca` in `dtype`, made once and remade after its weights change."""
    cached = _PREPARED.setdefault(coca, {})
    prepared = cached.get((dtype, pack))
    if prepared is None or prepared.key != weights_key(coca):
        cached.clear()  # one dtype at a time: a bf16 copy is half the decoder's fp32 size
        prepared = cached[dtype, pack] = DecoderWeights(coca, dtype, pack=pack)
    return prepared


# --------------------------------------------------------------------------- cached attention
def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    return x.unflatten(-1, (h, -1)).transpose(1, 2)  # (N, L, W) -> (N, H, L, D)


class _SelfAttnCache:
    """Keys and values of one stack of causal self-attention blocks, preallocated to `max_len`:
    per block one (2, N, H, max_len, D) tensor, keys then values, written in place at each step."""

    def __init__(self, blocks: list[_Block], n: int, max_len: int, dtype: torch.dtype, device: torch.device):
        self.h = blocks[0].heads
        d = blocks[0].out.b.shape[0] // self.h
        self.kv = [torch.empty((2, n, self.h, max_len, d), dtype=dtype, device=device) for _ in blocks]

    def block(self, i: int, block: _Block, x: torch.Tensor, pos: int, mask: torch.Tensor | None) -> torch.Tensor:
        """Block i (attention and MLP) for new positions [pos, pos+L) given the cached [0, pos)."""
        n, length, w = x.shape
        qkv = block.qkv(block.ln_1(x)).view(n, length, 3, self.h, -1).permute(2, 0, 3, 1, 4)  # (3, N, H, L, D)
        end = pos + length
        kv = self.kv[i]
        kv[:, :, :, pos:end] = qkv[1:]
        out = F.scaled_dot_product_attention(qkv[0], kv[0, :, :, :end], kv[1, :, :, :end], attn_mask=mask)
        return block.residual(x, block.out(out.transpose(1, 2).reshape(n, length, w)))  # (N, L, W)

    def select(self, rows: torch.Tensor, end: int) -> None:
        """Keep (and reorder) these rows; only positions [0, end) are copied."""
        for i, kv in enumerate(self.kv):
            kept = kv.new_empty((kv.shape[0], len(rows), *kv.shape[2:]))
            kept[:, :, :, :end] = kv[:, :, :, :end].index_select(1, rows)
            self.kv[i] = kept


class DecodeState:
    """Everything generation carries from step to step for N sequences of B videos (N = B * k)."""

    def __init__(self, coca: nn.Module, image_embs: torch.Tensor, rows_per_video: int, max_len: int,
                 dtype: torch.dtype | None = None, *, pack: bool = True):
        self.coca = coca
        self.text = coca.text
        self.dec = coca.text_decoder
        self.k = rows_per_video
        b = image_embs.shape[0]
        n = b * rows_per_video
        device = image_embs.device
        if dtype is None:  # what autocast would compute in, if it is on
            dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else image_embs.dtype
        self.w = decoder_weights(coca, dtype, pack=pack)
        self.text_cache = _SelfAttnCache(self.w.text, n, max_len, dtype, device)
        self.dec_cache = _SelfAttnCache(self.w.dec, n, max_len, dtype, device)
        # open_clip's CoCa text mask: with the legacy CLS placement (all released CoCa weights) key j >= 1
        # is masked when token j-1 is pad_id; with correct_cls_mask, when token j is
        self.key_ok = torch.ones(n, max_len, dtype=torch.bool, device=device)
        self.pad_id = getattr(self.text, "pad_id", 0)
        self.shift = 0 if getattr(self.text, "correct_cls_mask", False) else 1
        self.pos = 0
        # cross-attention keys/values over the image tokens: once per video, shared by its rows
        self.cross_k, self.cross_v = [], []
        with torch.autocast(device.type, enabled=False):
            for block in self.w.cross:
                k, v = block.kv(block.ln_1_kv(image_embs)).chunk(2, dim=-1)  # (B, Q, E) each
                # contiguous once here, not copied by the attention kernel at every step
                self.cross_k.append(_heads(k, block.heads).contiguous())  # (B, H, Q, D)
                self.cross_v.append(_heads(v, block.heads).contiguous())

    def _cross(self, i: int, block: _Block, x: torch.Tensor) -> torch.Tensor:
        """Cross-attention block i: the text positions attend to their video's image tokens."""
        h = block.heads
        n, length, w = x.shape
        q = block.qkv(block.ln_1(x)).view(n, length, h, -1).transpose(1, 2)  # (N, H, L, D)
        if self.k > 1:  # the k rows of a video attend to the same keys: fold them into the query axis
            q = q.unflatten(0, (-1, self.k)).transpose(1, 2).reshape(n // self.k, h, self.k * length, -1)
        out = F.scaled_dot_product_attention(q, self.cross_k[i], self.cross_v[i])  # (B, H, k*L, D)
        if self.k > 1:
            out = out.unflatten(2, (self.k, length)).transpose(1, 2).reshape(n, h, length, -1)  # (N, H, L, D)
        return block.residual(x, block.out(out.transpose(1, 2).reshape(n, length, w)))

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Feed new token ids (N, L) at the current position; returns logits (N, V) for the last one."""
        with torch.autocast(token_ids.device.type, enabled=False):  # weights are already in the compute dtype
            return self._forward(token_ids)

    def _forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        n, length = token_ids.shape
        pos, end = self.pos, self.pos + token_ids.shape[1]
        # unimodal text tower (its CLS token comes last, so earlier positions never see it)
        x = self.text.token_embedding(token_ids).to(self.text.transformer.get_cast_dtype())
        x = x + self.text.positional_embedding[pos:end].to(x.dtype)  # (N, L, W)
        first = pos + self.shift
        fits = min(length, self.key_ok.shape[1] - first)
        self.key_ok[:, first : end + self.shift] = token_ids[:, :fits] != self.pad_id
        causal = torch.ones(length, end, dtype=torch.bool, device=x.device).tril(diagonal=pos)  # (L, end)
        text_mask = causal[None, None] & self.key_ok[:, None, None, :end]  # (N, 1, L, end)
        for i, block in enumerate(self.w.text):
            x = self.text_cache.block(i, block, x, pos, text_mask)
        # multimodal decoder: causal self-attention, then cross-attention to the video tokens
        dec_mask = None if length == 1 else causal[None, None]
        for i, block in enumerate(self.w.dec):
            x = self._cross(i, self.w.cross[i], self.dec_cache.block(i, block, x, pos, dec_mask))
        self.pos = end
        out = self.dec.ln_final(x[:, -1])  # (N, W): only the last position is projected to the vocabulary
        if self.w.vocab is None:
            return out @ self.dec.text_projection  # (N, V) fp32
        return self.w.vocab(out).float()  # (N, V)

    def select(self, rows: torch.Tensor, videos: torch.Tensor | None = None) -> None:
        """Keep (and reorder) these sequence rows; `videos` the videos they now belong to, if that changed."""
        self.text_cache.select(rows, self.pos)
        self.dec_cache.select(rows, self.pos)
        self.key_ok = self.key_ok.index_select(0, rows)
        if videos is not None:
            self.cross_k = [t.index_select(0, videos) for t in self.cross_k]
            self.cross_v = [t.index_select(0, videos) for t in self.cross_v]


# --------------------------------------------------------------------------- logits processing
def process_logits(
    logits: torch.Tensor,
    seqs: torch.Tensor,
    generated: int,
    *,
    eot: int,
    min_len: int,
    repetition_penalty: float,
    suppress: torch.Tensor | None = None,
) -> torch.Tensor:
    """Repetition penalty (CTRL / Hugging Face rule) over `seqs`, no end token before `min_len` new tokens,
    and never the `suppress` token ids."""
    if suppress is not None and len(suppress):
        logits = logits.index_fill(1, suppress, -math.inf)
    if repetition_penalty != 1.0:
        picked = logits.gather(1, seqs)
        picked = torch.where(picked < 0, picked * repetition_penalty, picked / repetition_penalty)
        logits = logits.scatter(1, seqs, picked)
    if generated < min_len:
        logits = logits.clone()
        logits[:, eot] = -math.inf
    return logits


def warp(logits: torch.Tensor, *, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Temperature, then top-k and/or nucleus (top-p) filtering; filtered logits become -inf."""
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the tokens ranked above it already reach top_p (the first is always kept)
        drop = (probs.cumsum(-1) - probs) >= top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(1, order, drop), -math.inf)
    return logits


# --------------------------------------------------------------------------- search
def _finish(ids: list[int], eot: int) -> list[int]:
    return ids[: ids.index(eot)] if eot in ids else ids


@dataclass(frozen=True)
class GenerationConfig:
    """How text is decoded (as Hugging Face's GenerationConfig): one object passed down instead of a dozen
    keyword arguments. `VideoCoCa.generate(config=..., **overrides)` builds one with `replace`."""

    method: Method = "beam"
    """greedy, beam (length-normalised), top_k or top_p sampling."""
    num_beams: int = 6
    """Beams per video (beam search)."""
    max_len: int = 30
    """New tokens at most (the end token counts)."""
    min_len: int = 5
    """New tokens before the end token may be chosen."""
    top_k: int = 50
    """Candidates kept per step (top_k sampling)."""
    top_p: float = 0.9
    """Probability mass kept per step (top_p sampling)."""
    temperature: float = 1.0
    """Divides the logits before sampling."""
    repetition_penalty: float = 1.0
    """CTRL-style penalty on tokens already generated (1: none)."""
    length_penalty: float = 1.0
    """Exponent of the length normalisation of beam scores."""
    seed: int | None = None
    """Seed of the sampling methods (None: a fresh one)."""
    suppress: tuple[str, ...] | None = None
    """Words (one token each) never generated; None: the model's own list for unprompted captions."""

    def check(self) -> None:
        """Raise OptionError naming the first value that cannot be used."""
        check_choice(self.method, METHODS, "method")
        if not isinstance(self.max_len, int) or self.max_len < 1:
            raise OptionError(f"max_len must be a positive integer, got {self.max_len!r}")
        if not 0 <= self.min_len <= self.max_len:
            raise OptionError(f"min_len must be between 0 and max_len={self.max_len}, got {self.min_len!r}")
        if self.method == "beam" and (not isinstance(self.num_beams, int) or self.num_beams < 1):
            raise OptionError(f"num_beams must be a positive integer, got {self.num_beams!r}")
        if self.method == "top_k" and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise OptionError(f"top_k must be a positive integer, got {self.top_k!r}")
        if self.method == "top_p" and not 0 < self.top_p <= 1:
            raise OptionError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.temperature <= 0:
            raise OptionError(f"temperature must be positive, got {self.temperature!r}")
        if self.repetition_penalty <= 0:
            raise OptionError(f"repetition_penalty must be positive, got {self.repetition_penalty!r}")


def generate_ids(
    coca: nn.Module,
    image_embs: torch.Tensor,
    prefix: torch.Tensor,
    *,
    eot: int,
    config: GenerationConfig,
    generator: torch.Generator | None = None,
    suppress: torch.Tensor | None = None,
) -> list[tuple[list[int], float]]:
    """Generated ids (without the end token) and score per video, all videos sharing one prefix length.

    image_embs (B, Q, E); prefix (B, P) token ids starting with the start token.
    """
    c = config
    if c.method == "beam":
        return _beam(coca, image_embs, prefix, eot=eot, num_beams=c.num_beams, max_len=c.max_len, min_len=c.min_len,
                     repetition_penalty=c.repetition_penalty, length_penalty=c.length_penalty, suppress=suppress)
    return _stepwise(coca, image_embs, prefix, eot=eot, method=c.method, max_len=c.max_len, min_len=c.min_len,
                     top_k=c.top_k, top_p=c.top_p, temperature=c.temperature,
                     repetition_penalty=c.repetition_penalty, generator=generator, suppress=suppress)


def _stepwise(
    coca: nn.Module,
    image_embs: torch.Tensor,
    prefix: torch.Tensor,
    *,
    eot: int,
    method: Method,
    max_len: int,
    min_len: int,
    top_k: int | None,
    top_p: float | None,
    temperature: float,
    repetition_penalty: float,
    generator: torch.Generator | None,
    suppress: torch.Tensor | None,
) -> list[tuple[list[int], float]]:
    """Greedy decoding or sampling, one token per step for every video still writing."""
    b = image_embs.shape[0]
    state = DecodeState(coca, image_embs, 1, prefix.shape[1] + max_len)
    logits = state.forward(prefix)  # (B, V)
    seqs = prefix
    alive = torch.arange(b, device=prefix.device)  # which video each row is
    out: list[list[int]] = [[] for _ in range(b)]
    scores = [0.0] * b
    for step in range(max_len):
        logits = process_logits(logits, seqs, step, eot=eot, min_len=min_len, repetition_penalty=repetition_penalty,
                                suppress=suppress)
        if method == "greedy":
            logp = logits.log_softmax(-1)
            nxt = logits.argmax(-1)  # (N,)
        else:
            warped = warp(logits, temperature=temperature, top_k=top_k if method == "top_k" else None,
                          top_p=top_p if method == "top_p" else None)
            logp = warped.log_softmax(-1)
            nxt = torch.multinomial(logp.exp(), 1, generator=generator)[:, 0]
        picked = logp.gather(1, nxt[:, None])[:, 0].tolist()
        for row, (video, tok) in enumerate(zip(alive.tolist(), nxt.tolist())):
            out[video].append(tok)
            scores[video] += picked[row]
        done = nxt == eot
        if step == max_len - 1 or done.all():
            break
        if done.any():  # finished sequences leave the batch: no more work for them
            keep = (~done).nonzero()[:, 0]
            state.select(keep, videos=keep)
            alive, nxt, seqs = alive[keep], nxt[keep], seqs[keep]
        seqs = torch.cat([seqs, nxt[:, None]], 1)
        logits = state.forward(nxt[:, None])
    return [(_finish(ids, eot), score) for ids, score in zip(out, scores)]


def _beam(
    coca, image_embs, prefix, *, eot, num_beams, max_len, min_len, repetition_penalty, length_penalty, suppress=None
) -> list[tuple[list[int], float]]:
    """Beam search. A hypothesis scores sum(log p) / len ** length_penalty, len counting new tokens with
    the end token. Each step keeps, per video, the best `num_beams` continuations that do not end; an
    ending one among the best `num_beams` candidates becomes a finished hypothesis. A video stops when
    it has `num_beams` finished hypotheses and no live beam scores better than the worst of them
    at its current length (Hugging Face's early_stopping=False rule), or at max_len."""
    k = num_beams
    b = image_embs.shape[0]
    device = prefix.device
    state = DecodeState(coca, image_embs, k, prefix.shape[1] + max_len)
    seqs = prefix.repeat_interleave(k, 0)  # (B*k, P): rows grouped by video
    logits = state.forward(seqs)
    beam_scores = torch.zeros(b, k, device=device)
    beam_scores[:, 1:] = -math.inf  # all beams start identical: expand only the first
    gen = torch.empty(b * k, 0, dtype=torch.long, device=device)
    finished: list[list[tuple[float, list[int], float]]] = [[] for _ in range(b)]  # (norm score, ids, raw)
    alive = list(range(b))  # video of each row group
    for step in range(max_len):
        logits = process_logits(logits, seqs, step, eot=eot, min_len=min_len, repetition_penalty=repetition_penalty,
                                suppress=suppress)
        logp = logits.log_softmax(-1)  # (n*k, V)
        vocab = logp.shape[-1]
        cand = (beam_scores.reshape(-1, 1) + logp).view(len(alive), k * vocab)
        top_scores, top_idx = cand.topk(2 * k, dim=-1)  # (n, 2k)
        next_rows, next_tokens, next_scores, still = [], [], [], []
        for g, video in enumerate(alive):
            rows, toks, scs, finished[video], done = _beam_video_step(
                g, top_scores[g].tolist(), top_idx[g].tolist(), finished[video], gen, k=k, vocab=vocab, eot=eot,
                length=step + 1, length_penalty=length_penalty, last=step == max_len - 1)
            if not done:
                still.append(g)
                next_rows += rows
                next_tokens += toks
                next_scores.append(scs)
        if not still:
            break
        rows_t = torch.tensor(next_rows, device=device)
        tok_t = torch.tensor(next_tokens, device=device)
        kept_videos = torch.tensor(still, device=device) if len(still) < len(alive) else None
        state.select(rows_t, videos=kept_videos)
        alive = [alive[g] for g in still]
        beam_scores = torch.tensor(next_scores, device=device)
        seqs = torch.cat([seqs.index_select(0, rows_t), tok_t[:, None]], 1)
        gen = torch.cat([gen.index_select(0, rows_t), tok_t[:, None]], 1)
        logits = state.forward(tok_t[:, None])
    results = []
    for video in range(b):
        best = max(finished[video], key=lambda h: h[0])
        results.append((_finish(best[1], eot), best[0]))
    return results


def _beam_video_step(g: int, scores: list[float], idx: list[int], hyps: list, gen: torch.Tensor, *, k: int,
                     vocab: int, eot: int, length: int, length_penalty: float, last: bool):
    """One video's beam step over its best 2k candidates (`scores`, flat beam*vocab `idx`; its beams are rows
    g*k.. of `gen`). Returns the rows, tokens and scores of its next beams, its finished hypotheses (best k,
    plus the live beams at the `last` step) and whether it is done."""
    rows, toks, scs = [], [], []
    for rank, (score, flat) in enumerate(zip(scores, idx)):
        beam, tok = divmod(flat, vocab)
        if score == -math.inf:
            break
        if tok == eot:
            if rank < k:
                hyps.append((score / length**length_penalty, gen[g * k + beam].tolist(), score))
            continue
        rows.append(g * k + beam)
        toks.append(tok)
        scs.append(score)
        if len(rows) == k:
            break
    hyps = sorted(hyps, key=lambda h: -h[0])[:k]
    best_alive = max(scs) if scs else -math.inf
    done = len(rows) < k or (len(hyps) >= k and hyps[-1][0] >= best_alive / length**length_penalty)
    if last and not done:  # out of length: live beams become hypotheses
        hyps += [(s / length**length_penalty, gen[r].tolist() + [t], s) for r, t, s in zip(rows, toks, scs)]
        done = True
    return rows, toks, scs, hyps, done
