"""Train videococa-tiny: a small open_clip CoCa, on synthetic still images only, with the CoCa loss.

The architecture is the LAION CoCa layout at small size (scripts/tiny_config.json: ViT 64px/8,
one attentional pooler with 256 queries, CLIP BPE tokenizer). Loss: contrastive (InfoNCE with the
learnable temperature, open_clip's ClipLoss) + 2 x captioning cross-entropy, as in CoCa.

The captioning loss is the exact full-vocabulary cross-entropy computed cheaply: output-projection
columns of tokens that never occur in the synthetic texts are held at zero, so their logits are
exactly 0 and they enter the softmax normaliser as a constant log(count) term.

Shape: the image tower first trains alone for --vision-warmup steps on two auxiliary losses (which shape
covers each patch; which shapes the image holds, read from the contrastive embedding), then the CoCa
steps keep them on; their heads are discarded (bench/RESULTS.md, "why shape is not learned").

Run:  .venv/bin/python scripts/train_tiny.py            (about 23 minutes on 2 idle CPU cores)
Writes src/videococa/models/tiny/{config.json, generation.json, model.safetensors, training.json}.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from open_clip.pos_embed import get_2d_sincos_pos_embed
from torch.nn.attention import SDPBackend, sdpa_kernel
from safetensors.torch import save_file
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent

from videococa.models.decoding import decoder_hidden
from videococa.synthetic.world import (
    BACKGROUND_TONES, BACKGROUNDS, COLOURS, SHAPES, image_sample, image_sample_with_scene, shape_coverage,
)
from videococa.video.transforms import CLIP_MEAN, CLIP_STD

DEFAULT_OUT = ROOT / "src" / "videococa" / "models" / "tiny"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2400)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=150)
    p.add_argument("--caption-weight", type=float, default=2.0)
    p.add_argument("--qa-share", type=float, default=0.3, help="share of texts that are question+answer")
    # shape: the shipped model uses --patch-whiten, --dense-shape, --shape-label and --vision-warmup (fifth
    # round in bench/RESULTS.md); --hard-group and --pos-init are off (second round: no effect on shape)
    p.add_argument("--hard-group", type=int, default=1,
                   help="images per group sharing colour and background (contrastive hard negatives); 1 = off")
    p.add_argument("--pos-init", choices=("sincos", "random"), default="random",
                   help="initial (learnable) ViT position embedding: 2-D sin-cos or open_clip's random")
    p.add_argument("--dense-shape", type=float, default=1.0,
                   help="weight of an auxiliary per-patch shape loss on the ViT tokens (head discarded after training); 0 = off")
    p.add_argument("--shape-label", type=float, default=1.0,
                   help="weight of an auxiliary multi-label loss (which shapes are in the image) on the contrastive "
                        "image embedding before L2 normalisation (linear head discarded after training); 0 = off")
    p.add_argument("--vision-warmup", type=int, default=1200, metavar="STEPS",
                   help="steps that train the image tower alone on the --dense-shape and --shape-label losses "
                        "(constant lr) before the CoCa steps; 0 = off")
    p.add_argument("--patch-whiten", type=float, default=0.01, metavar="EPS",
                   help="initialise the ViT patch embedding as a whitening of image patches (eigenvectors of the "
                        "patch covariance scaled by 1/sqrt(eigenvalue + EPS)); 0 = open_clip's random init")
    p.add_argument("--fast-step", action=argparse.BooleanOptionalAction, default=True,
                   help="fused AdamW and the decoder run only to the longest text: 0.64 -> 0.46 s/step on 2 cores; "
                        "same maths as --no-fast-step, different float rounding")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if args.vision_warmup and not (args.dense_shape > 0 or args.shape_label > 0):
        p.error("--vision-warmup trains on the shape losses: give --dense-shape and/or --shape-label a weight > 0")
    return args


def text_vocabulary(tokenizer, n: int = 20000) -> list[int]:
    """Token ids that occur in the synthetic texts (a large sample covers every template and word)."""
    ids = {tokenizer.eot_token_id}
    for s in range(n):
        _, text = image_sample(10**9 + s, 8, qa_share=0.5)
        ids.update(tokenizer.encode(text))
    return sorted(ids)


def lr_at(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * 0.5 * (1 + math.cos(math.pi * progress))


VISION_WARMUP_SEEDS = 5 * 10**6
"""Offset of the --vision-warmup batches' seeds from the CoCa batches' (which use the first steps x batch)."""


def batch(step: int, args, tokenizer, mean, std, offset: int = 0):
    seeds = [args.seed * 10**7 + offset + step * args.batch_size + i for i in range(args.batch_size)]
    samples = []
    for g in range(0, args.batch_size, args.hard_group):
        # a group shares colour and background, so its captions differ in shape, size and place: the
        # contrastive loss cannot be met by colour alone (with 1, every image is drawn freely)
        colour = background = None
        if args.hard_group > 1:
            rng = random.Random(seeds[g] * 7 + 1)
            colour, background = rng.choice(list(COLOURS)), (rng.choice(BACKGROUNDS), rng.choice(BACKGROUND_TONES))
        samples += [image_sample_with_scene(s, 64, qa_share=args.qa_share, colour=colour, background=background)
                    for s in seeds[g:g + args.hard_group]]
    images = torch.from_numpy(np.stack([img for img, _, _ in samples])).permute(0, 3, 1, 2)  # (B, 3, 64, 64) uint8
    images = (images.float() / 255 - mean) / std
    texts = [t for _, t, _ in samples]
    is_caption = torch.tensor([not t.startswith("question:") for t in texts])
    coverage = None
    if args.dense_shape > 0 or args.shape_label > 0:
        coverage = torch.from_numpy(np.stack([shape_coverage(sc, 64, 8) for _, _, sc in samples]))  # (B, 1+S, 8, 8)
    return images, tokenizer(texts), is_caption, coverage


def patch_whitening(visual, images: torch.Tensor, eps: float) -> None:
    """Set visual.conv1 to whiten the patches of `images` (B, 3, H, W): its outputs start decorrelated.

    The top `width` principal directions of the (3*P*P)-dim patches, each scaled by 1/sqrt(eigenvalue + eps),
    in conv1's (out, 3, P, P) layout; a data-dependent init of the same learnable layer (the first layer of
    Keller Jordan's airbench CIFAR-10 speedruns is initialised the same way).
    """
    width, _, p, _ = visual.conv1.weight.shape
    patches = images.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * p * p)  # (n, 3*P*P)
    patches = patches.double() - patches.double().mean(0)
    eigval, eigvec = torch.linalg.eigh(patches.T @ patches / len(patches))  # ascending
    eigval, eigvec = eigval.flip(0)[:width], eigvec.flip(1)[:, :width]
    weight = (eigvec / (eigval.clamp_min(0) + eps).sqrt()).T  # (width, 3*P*P)
    with torch.no_grad():
        visual.conv1.weight.copy_(weight.reshape(width, 3, p, p).to(visual.conv1.weight.dtype))


def shapes_present(coverage: torch.Tensor) -> torch.Tensor:
    """(B, S) 0/1 targets of --shape-label: which shapes cover any part of each image's (B, 1+S, g, g) coverage maps."""
    return (coverage[:, 1:].sum((2, 3)) > 0).float()


def encode_image_with_patches(visual, images):
    """open_clip's VisionTransformer.forward, keeping the transformer's patch outputs for the dense loss.

    The image latent is returned before L2 normalisation (open_clip's encode_image normalises it).
    """
    x = visual.transformer(visual._embeds(images))  # (B, 1+N, W)
    pooled, tokens = visual._pool(x)
    return pooled @ visual.proj, tokens, x[:, 1:]  # (B, E), (B, 255, E), (B, N, W)


def shape_losses(dense_head, label_head, latent, patches, coverage) -> dict:
    """The auxiliary shape losses that are on, by their log name (unweighted)."""
    aux = {}
    if dense_head is not None:  # soft cross-entropy against each patch's shape coverage
        cover = coverage.flatten(2).transpose(1, 2)  # (B, N, 1+S)
        aux["dense"] = -(cover * dense_head(patches).float().log_softmax(-1)).sum(-1).mean()
    if label_head is not None:  # which shapes the image holds, read off its coverage maps
        aux["shape_label"] = F.binary_cross_entropy_with_logits(label_head(latent).float(), shapes_present(coverage))
    return aux


def aux_total(args, aux: dict) -> torch.Tensor:
    weights = {"dense": args.dense_shape, "shape_label": args.shape_label}
    return sum(weights[k] * v for k, v in aux.items())


def make_optimizer(args, model, dense_head, label_head):
    """AdamW over the model and the shape heads; returns the (name, parameter) list and the optimiser.

    No weight decay on gains, biases, embeddings, the temperature, the pooler's queries (rows the current
    loss leaves without gradient must not shrink) and the discarded heads.
    """
    decay, no_decay = [], []
    named = list(model.named_parameters())
    for prefix, head in (("dense_head", dense_head), ("label_head", label_head)):
        named += [] if head is None else list(head.named_parameters(prefix))
    for name, p in named:
        (no_decay if p.ndim < 2 or "embedding" in name or "logit_scale" in name or name.endswith("query")
         or name.startswith(("dense_head", "label_head")) else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.98), eps=1e-6, fused=args.fast_step or None,  # unfused: a fifth of the step
    )
    return named, opt


def vision_warmup(args, visual, dense_head, label_head, opt, tokenizer, mean, std, log: list) -> None:
    """--vision-warmup: train the image tower alone on the shape losses, before any text is seen.

    Constant lr after a linear ramp over the first --warmup steps. `opt` is the run's optimiser: the
    parameters this stage leaves without gradients (text tower, decoder) are not touched by it.
    Logged as steps -N..-1 before the CoCa steps.
    """
    params = [*visual.parameters(), *(p for h in (dense_head, label_head) if h is not None for p in h.parameters())]
    t0 = time.time()
    bar = tqdm(range(args.vision_warmup), desc="vision warm-up", unit="step")
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / args.warmup)
        images, _, _, coverage = batch(step, args, tokenizer, mean, std, offset=VISION_WARMUP_SEEDS)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16), sdpa_kernel(SDPBackend.MATH):
            latent, _, patches = encode_image_with_patches(visual, images)  # the decoder's tokens get no loss here
            aux = shape_losses(dense_head, label_head, latent, patches, coverage)
        loss = aux_total(args, aux)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)  # this order of summation is the shipped model's
        opt.step()
        if step % 50 == 0 or step == args.vision_warmup - 1:
            log.append(dict(step=step - args.vision_warmup, loss=round(loss.item(), 4),
                            **{k: round(v.item(), 4) for k, v in aux.items()}, lr=round(opt.param_groups[0]["lr"], 6),
                            seconds=round(time.time() - t0, 1)))
            bar.set_postfix(**{k: v for k, v in log[-1].items() if k in aux})


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(torch.get_num_threads())
    cfg = json.loads((ROOT / "scripts" / "tiny_config.json").read_text())
    model_cfg = {k: v for k, v in cfg.items() if k != "custom_text"}
    model = open_clip.CoCa(**model_cfg)
    tokenizer = open_clip.SimpleTokenizer(context_length=cfg["text_cfg"]["context_length"])
    dec = model.text_decoder
    if args.pos_init == "sincos":
        # a locality prior for the ViT: neighbouring patches start with similar position codes (still learnable)
        with torch.no_grad():
            grid = model.visual.grid_size[0]
            model.visual.positional_embedding.copy_(
                torch.from_numpy(get_2d_sincos_pos_embed(model.visual.positional_embedding.shape[1], grid, cls_token=True)))

    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    if args.patch_whiten > 0:  # 512 stills from seeds the training batches never use
        stills = np.stack([image_sample(2 * 10**9 + i, 64, qa_share=0.0)[0] for i in range(512)])
        stills = torch.from_numpy(stills).permute(0, 3, 1, 2).float() / 255  # (512, 3, 64, 64)
        patch_whitening(model.visual, (stills - mean) / std, args.patch_whiten)

    label_head = None
    if args.shape_label > 0:  # reads the contrastive image embedding; trained with the model, never saved
        label_head = torch.nn.Linear(cfg["embed_dim"], len(SHAPES))

    dense_head = None
    if args.dense_shape > 0:
        # reads the tokens the attentional pooler attends over; trained with the model, never saved
        dense_head = torch.nn.Sequential(torch.nn.LayerNorm(model.visual.transformer.width),
                                         torch.nn.Linear(model.visual.transformer.width, 1 + len(SHAPES)))

    vocab = text_vocabulary(tokenizer)
    vocab_t = torch.tensor(vocab)
    n_unused = cfg["multimodal_cfg"]["vocab_size"] - len(vocab)
    index_of = torch.full((cfg["multimodal_cfg"]["vocab_size"],), -1, dtype=torch.long)
    index_of[vocab_t] = torch.arange(len(vocab))
    with torch.no_grad():
        torch.nn.init.normal_(dec.text_projection, std=dec.width ** -0.5)
        keep = torch.zeros(dec.text_projection.shape[1], dtype=torch.bool)
        keep[vocab_t] = True
        dec.text_projection[:, ~keep] = 0.0  # logits of tokens that never occur stay exactly 0

    named, opt = make_optimizer(args, model, dense_head, label_head)
    clip_loss = ClipLoss()
    log = []
    t0 = time.time()
    model.train()
    if args.vision_warmup:
        vision_warmup(args, model.visual, dense_head, label_head, opt, tokenizer, mean, std, log)
    bar = tqdm(range(args.steps), desc="train videococa-tiny", unit="step")
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        images, tokens, is_caption, coverage = batch(step, args, tokenizer, mean, std)
        # the math attention kernel: CPU flash-attention backward is slow on these short sequences
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16), sdpa_kernel(SDPBackend.MATH):
            img_latent, img_embs, patches = encode_image_with_patches(model.visual, images)  # (B, E), (B, 255, E), (B, N, W)
            aux = shape_losses(dense_head, label_head, img_latent, patches, coverage)
            txt_latent, tok_embs = model._encode_text(tokens)  # (B, E), (B, L, W)
            # the decoder only up to the longest text: causal attention makes this exact for every real token
            n = int((tokens != 0).sum(1).max()) if args.fast_step else tokens.shape[1]
            hidden = decoder_hidden(dec, img_embs, tok_embs[:, : n - 1])  # (B, n-1, W)
            logits = hidden @ dec.text_projection[:, vocab_t]  # (B, n-1, |V|): the only non-zero columns
        labels = tokens[:, 1:n]
        mask = labels != 0  # open_clip pads with 0 and ignores it in the caption loss
        logits = logits.float()[mask]  # (M, |V|)
        target = index_of[labels[mask]]
        # full-vocabulary log-normaliser: the |V| live logits plus n_unused logits that are exactly 0
        lse = torch.logaddexp(torch.logsumexp(logits, -1), torch.tensor(math.log(n_unused)))
        cap_loss = (lse - logits.gather(1, target[:, None])[:, 0]).mean()
        sel = is_caption.nonzero()[:, 0]
        con_loss = clip_loss(F.normalize(img_latent[sel].float(), dim=-1), F.normalize(txt_latent[sel].float(), dim=-1),
                             model.logit_scale.exp())
        loss = con_loss + args.caption_weight * cap_loss + aux_total(args, aux)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in named], 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
            dec.text_projection[:, ~keep] = 0.0  # weight decay never moves them, but keep it exact
        if step % 50 == 0 or step == args.steps - 1:
            rec = dict(step=step, loss=round(loss.item(), 4), contrastive=round(con_loss.item(), 4),
                       caption=round(cap_loss.item(), 4), **{k: round(v.item(), 4) for k, v in aux.items()},
                       lr=round(lr_at(step, args), 6),
                       logit_scale=round(model.logit_scale.exp().item(), 2), seconds=round(time.time() - t0, 1))
            log.append(rec)
            bar.set_postfix(loss=rec["loss"], con=rec["contrastive"], cap=rec["caption"])

    args.out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    tmp = args.out / "model.safetensors.part"
    save_file(sd, str(tmp), metadata={"format": "pt", "note": "fp16 storage; videococa loads it as fp32"})
    tmp.replace(args.out / "model.safetensors")
    (args.out / "config.json").write_text(json.dumps(cfg, indent=4) + "\n")
    (args.out / "generation.json").write_text(json.dumps({
        "caption_suppress": ["question"],
        "why": "A share of the training texts were questions with answers ('question: ... answer: ...'); unprompted "
               "captions must not drift into that format. Prompted generation (answer()) is unaffected.",
    }, indent=4) + "\n")
    info = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"},
            "torch": torch.__version__, "open_clip": open_clip.__version__, "vocabulary_tokens": len(vocab),
            "train_seconds": round(time.time() - t0, 1), "log": log}
    (args.out / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"wrote {args.out} in {time.time() - t0:.0f}s; final loss {log[-1]}")


if __name__ == "__main__":
    main()
