"""Issue 24 diagnostics: why finetuning does not learn motion.  Minutes each on 2 CPU cores, from the feature cache.

Trains the temporal modules + attentional pooler (+ ln_post, + the text decoder for the QA modes) for --steps
AdamW steps (warmup 20, cosine) with either
  --mode head       a 4-way linear direction head on the pooled embedding (--readout pooled) or on the mean of
                    the generative tokens (--readout tokens), cross-entropy: can the architecture learn direction?
  --mode qa-motion  the decoder's captioning loss on the motion question-answer pairs only
  --mode qa-all     the decoder's captioning loss on every question-answer pair (what `finetune --task qa` does)
and reports train / validation direction accuracy (QA modes: the direction word the decoder scores highest) and
the gradient and weight norms of the zero-initialised output layers. --inject adds a feature through a
zero-initialised linear layer to every frame token (--where tokens) or to the generative tokens (--where gen):
  oracle    the true direction, one-hot (an upper bound: can the decoder read a clean motion feature?)
  centroid  the per-frame centroid of the saliency |token - median token| over the patch grid (T x 2)
  maps      the per-frame saliency maps, centred over time (T x patches)
--scaled multiplies the mixer's residual branches by the token RMS (`enable_temporal(scaled=True)`).
--new-lr sets the learning rate of the temporal modules and the injected layer (default --lr).
--aux frame-order: a self-supervised loss on the mixer. Each training clip's T frames are permuted (the spatial
tokens of a frame stay together) and a linear head on the mixer's per-frame residual (output - input, divided by
the token RMS, averaged over the frame's tokens) predicts each slot's original frame index (T-way per frame).
Reversed playback looks like the opposite motion, so the loss is the smaller of the losses against the
permutation and against its reverse (and accuracy counts either). --aux-steps N trains mixer + aux head on this
loss alone for N steps before the --steps of --mode (--steps 0: aux only); --aux-weight w > 0 adds w x the aux
loss to every --mode step (joint). --probe: a linear direction probe (logistic regression, 600 train -> 500
validation videos) on the mixer's output and on its residual, per frame averaged over tokens (T x W), printed
before training, after the aux phase and at the end as (train, validation, validation axis: horizontal vs vertical).
--variant trajectory: the `--temporal trajectory` module (videococa.models.trajectory). QA-mode options:
--answer-loss (the loss on the answer tokens only, not on the question prompt), --focal g (targets weighted by
(1-p)^g, normalised), --reverse (qa-all: every motion pair again with its frames reversed and the opposite
answer), --pooled / --gen-k K (the trajectory's motion vector added after the pooler, to all or to the last K
generative tokens, instead of to the frame tokens), --vertical-words above,below (train and score these words for
up and down: videococa-tiny's decoder never produced 'up' or 'down', whose output columns are exactly zero).
Run (paths of the cached 600-video train and 500-video validation sets, see bench/RESULTS.md, issue 24):
  PYTHONPATH=src .venv/bin/python scripts/diagnose_motion.py --features feats --mode qa-motion --inject oracle
"""
import argparse, json, math, time, random
import torch, torch.nn.functional as F
import videococa
from videococa.synthetic.benchmark import load_benchmark, make_benchmark
from videococa.train import FeatureCache, clip_key
from videococa.train.finetune import trainable_parameters
from videococa.text import qa_prompt, qa_text
from videococa.models.decoding import decoder_hidden

DIRS = ["left", "right", "up", "down"]
WORDS = list(DIRS)  # the answer words trained and scored (--vertical-words changes the last two)

def load(path, cache):
    items, _ = load_benchmark(path)
    X, Y, Q, QA = [], [], [], []
    for it in items:
        x = cache.get(clip_key(it.path)).float()
        for q, a, k in it.questions:
            if k == "motion":
                X.append(x); Y.append(DIRS.index(a)); Q.append(q)
        QA.append([(q, a) for q, a, k in it.questions])
    return torch.stack(X), torch.tensor(Y), Q, QA

def seq_logprob(m, gen, texts):
    ids = m.tokenize(texts)
    ids = ids[:, : int((ids != 0).sum(1).max())]
    _, te = m.coca._encode_text(ids)
    h = decoder_hidden(m.coca.text_decoder, gen, te[:, :-1])
    lp = torch.log_softmax((h @ m.coca.text_decoder.text_projection).float(), -1)
    lab = ids[:, 1:]
    tok = lp.gather(-1, lab.unsqueeze(-1)).squeeze(-1) * (lab != 0)
    return tok.sum(1)

def qa_dir_acc(m, X, Q, Y, bs=100):
    """accuracy of choosing the direction with highest decoder log-prob among the 4 words."""
    correct, preds = 0, []
    with torch.no_grad():
        for i in range(0, len(Y), bs):
            _, gen = pool(m, INJ, X[i:i+bs], Y[i:i+bs])
            s = torch.stack([seq_logprob(m, gen, [qa_text(q, d) for q in Q[i:i+bs]]) for d in WORDS], 1)
            preds.append(s.argmax(1))
    p = torch.cat(preds)
    return float((p == Y).float().mean()), torch.bincount(p, minlength=4).tolist()

def saliency(x):
    """(B, T, N, W) -> (B, T, N-1) softmax over patches of |token - median token|."""
    sal = (x[:, :, 1:] - x[:, :, 1:].median(2, keepdim=True).values).norm(dim=-1)
    return torch.softmax(sal * 3, -1)

def frame_feats(m, x):
    """(B, T, N, W) -> the mixer's output and its residual / token RMS, each averaged over a frame's tokens (B, T, W)."""
    out = m.add_temporal(x)
    rms = x.pow(2).mean(-1, keepdim=True).sqrt()
    return out.mean(2), ((out - x) / rms).mean(2)

def aux_frame_order(m, head, x, gen):
    """frame-order loss and per-frame accuracy on clips x (B, T, N, W) with their frames permuted."""
    b, t = x.shape[:2]
    perm = torch.stack([torch.randperm(t, generator=gen) for _ in range(b)])  # (B, T): slot -> original index
    xs = x[torch.arange(b)[:, None], perm]  # (B, T, N, W)
    logits = head(frame_feats(m, xs)[1])  # (B, T, T)
    ce = [F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(1) for y in (perm, t - 1 - perm)]
    fwd = ce[0] <= ce[1]
    loss = torch.minimum(*ce).mean()
    target = torch.where(fwd[:, None], perm, t - 1 - perm)
    return loss, float((logits.argmax(-1) == target).float().mean())

def probe(m, Xtr, Ytr, Xva, Yva, steps=300):
    """validation accuracy of logistic-regression direction probes on the mixer output and on its residual."""
    with torch.no_grad():
        ftr = [torch.cat(z) for z in zip(*[frame_feats(m, Xtr[i:i+100]) for i in range(0, len(Ytr), 100)])]
        fva = [torch.cat(z) for z in zip(*[frame_feats(m, Xva[i:i+100]) for i in range(0, len(Yva), 100)])]
    res = {}
    for name, a, v in zip(["output", "residual"], ftr, fva):
        a, v = a.flatten(1), v.flatten(1)
        mu, sd = a.mean(0), a.std(0) + 1e-6
        a, v = (a - mu) / sd, (v - mu) / sd
        lin = torch.nn.Linear(a.shape[1], 4)
        o = torch.optim.Adam(lin.parameters(), lr=1e-2, weight_decay=1e-3)
        for _ in range(steps):
            o.zero_grad(); F.cross_entropy(lin(a), Ytr).backward(); o.step()
        with torch.no_grad():
            pv = lin(v).argmax(1)
            axis = float(((pv // 2) == (Yva // 2)).float().mean())  # horizontal vs vertical right
            res[name] = (round(float((lin(a).argmax(1) == Ytr).float().mean()), 3),
                         round(float((pv == Yva).float().mean()), 3), round(axis, 3))
    return res  # name -> (train, validation, validation axis accuracy)

WHERE = "tokens"
POOLED = False
GEN_K = 0
def pool(m, inj, X, Y):
    if POOLED:  # the trajectory's motion vector added after the pooler (to ln_post's output) instead of to the tokens
        tr = m.temporal_trajectory
        motion = tr.mlp(tr.features(X).flatten(1))  # (B, W) with W == ln_post's width here
        m.temporal_trajectory = None
        try:
            pooled, gen = m.pool(inj(X, Y))
        finally:
            m.temporal_trajectory = tr
        proj = m.coca.visual.proj
        if GEN_K:  # only the last GEN_K generative tokens carry it: the decoder can attend to them or not
            gen = torch.cat([gen[:, :-GEN_K], gen[:, -GEN_K:] + motion[:, None, :]], 1)
        else:
            gen = gen + motion[:, None, :]
        return pooled + (motion @ proj if proj is not None else motion), gen
    pooled, gen = m.pool(inj(X, Y))
    if WHERE == "gen" and inj.kind != "none":
        gen = gen + inj.proj(inj.f)[:, None, :]
    return pooled, gen

class Inject(torch.nn.Module):
    def __init__(self, kind, W):
        super().__init__()
        self.kind = kind
        d = {"none": 0, "oracle": 4, "centroid": 16, "maps": 8 * 64}[kind]
        if d:
            self.proj = torch.nn.Linear(d, W)
            torch.nn.init.zeros_(self.proj.weight); torch.nn.init.zeros_(self.proj.bias)
    def forward(self, x, y):
        if self.kind == "none":
            return x
        if self.kind == "oracle":
            f = F.one_hot(y, 4).float()
        else:
            w = saliency(x)  # (B, T, 64)
            if self.kind == "maps":
                f = (w - w.mean(1, keepdim=True)).flatten(1) * 10
            else:
                g = int(w.shape[-1] ** 0.5); grid = torch.arange(g).float() / (g - 1)
                w = w.reshape(*w.shape[:2], g, g)
                c = torch.stack([(w.sum(2) * grid).sum(-1), (w.sum(3) * grid).sum(-1)], -1)  # (B, T, 2)
                f = ((c - c.mean(1, keepdim=True)) * 10).flatten(1)
        self.f = f
        return x + self.proj(f)[:, None, None, :] if WHERE == "tokens" else x

def aux_phase(m, aux_head, Xtr, Xva, args, gen):
    """--aux-steps steps of the aux loss alone on the temporal modules + aux head (warmup 20, cosine)."""
    ps = [p for k, p in m.named_parameters() if k.startswith(("temporal_embedding", "temporal_mixer."))]
    ps += list(aux_head.parameters())
    lr = args.aux_lr or args.new_lr or args.lr
    opt = torch.optim.AdamW(ps, lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.05)
    N, t0 = args.aux_steps, time.time()
    for step in range(N):
        f = min(1, (step + 1) / 20) if step < 20 else 0.5 * (1 + math.cos(math.pi * (step - 20) / max(1, N - 20)))
        opt.param_groups[0]["lr"] = lr * f
        idx = torch.randint(len(Xtr), (args.bs,), generator=gen)
        loss, acc = aux_frame_order(m, aux_head, Xtr[idx], gen)
        opt.zero_grad(); loss.backward()
        torch.nn.utils.clip_grad_norm_(ps, 1.0); opt.step()
        if step % args.log_every == 0 or step == N - 1:
            print(json.dumps({"aux_step": step, "aux_loss": round(float(loss.detach()), 4), "aux_acc": round(acc, 3),
                              "s": round(time.time() - t0)}), flush=True)
    with torch.no_grad():
        print(json.dumps({"aux_phase_val_acc": round(aux_frame_order(m, aux_head, Xva, gen)[1], 3)}), flush=True)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", required=True, help="feature cache of videococa-tiny, 8 frames")
    ap.add_argument("--train", default=None, help="synthetic benchmark folder (default: 600 videos, seed 7)")
    ap.add_argument("--val", default=None, help="synthetic benchmark folder (default: 500 videos, seed 2022)")
    ap.add_argument("--variant", default="transformer")
    ap.add_argument("--mode", default="head", choices=["head", "qa-motion", "qa-all"])
    ap.add_argument("--readout", default="pooled", choices=["pooled", "tokens"])
    ap.add_argument("--steps", type=int, default=376)
    ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--new-lr", type=float, default=None, help="lr of the temporal modules (default --lr)")
    ap.add_argument("--scaled", action="store_true", help="the mixer's residuals scaled by the token RMS")
    ap.add_argument("--freeze-decoder", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--where", default="tokens", choices=["tokens", "gen"])
    ap.add_argument("--inject", default="none", choices=["none", "oracle", "centroid", "maps"])
    ap.add_argument("--aux", default="none", choices=["none", "frame-order"])
    ap.add_argument("--aux-weight", type=float, default=0.0, help="aux loss weight in the --mode steps (joint)")
    ap.add_argument("--aux-steps", type=int, default=0, help="aux-only steps before the --mode steps")
    ap.add_argument("--aux-lr", type=float, default=None, help="peak lr of the aux-only phase (default --new-lr)")
    ap.add_argument("--probe", action="store_true", help="linear direction probes on the mixer (see docstring)")
    ap.add_argument("--focal", type=float, default=0.0, help="QA modes: focal weighting (1-p)^gamma of the targets")
    ap.add_argument("--reverse", action="store_true", help="qa-all: add every motion pair reversed (answer flipped)")
    ap.add_argument("--pooled", action="store_true", help="trajectory: add its motion vector after the pooler")
    ap.add_argument("--gen-k", type=int, default=0, help="--pooled: add it to the last K generative tokens only")
    ap.add_argument("--vertical-words", default=None,
                    help="train and score these two words for up,down (e.g. above,below: words videococa-tiny's "
                         "decoder has produced; its output columns for 'up' and 'down' are exactly zero)")
    ap.add_argument("--answer-head", type=float, default=0.0,
                    help="QA modes: add w x a direction head's cross-entropy on the pooled embedding of the motion pairs")
    ap.add_argument("--answer-loss", action="store_true", help="QA modes: the loss on the answer tokens only")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    if args.vertical_words:
        WORDS[2:] = args.vertical_words.split(",")
    global WHERE, POOLED, GEN_K; WHERE = args.where; POOLED = args.pooled; GEN_K = args.gen_k
    cache = FeatureCache(args.features)
    Xtr, Ytr, Qtr, QAtr = load(args.train or make_benchmark(None, num_videos=600, seed=7), cache)
    Xva, Yva, Qva, _ = load(args.val or make_benchmark(None, num_videos=500), cache)
    m = videococa.load_model("videococa-tiny", precision="fp32")
    m.enable_temporal(args.variant, scaled=args.scaled)
    params = trainable_parameters(m)
    if args.freeze_decoder or args.mode == "head":
        params = {k: p for k, p in params.items() if not k.startswith("coca.text_decoder.")}
    for p in m.parameters(): p.requires_grad_(False)
    for p in params.values(): p.requires_grad_(True)
    W = m.coca.visual.transformer.width
    inj = Inject(args.inject, W)
    for k, p in inj.named_parameters(): params["motion." + k] = p; p.requires_grad_(True)
    E = m.coca.visual.proj.shape[1] if m.coca.visual.proj is not None else 128
    head = torch.nn.Linear(E, 4)
    new = [p for k, p in params.items() if k.startswith(("temporal", "motion"))]
    old = [p for k, p in params.items() if not k.startswith(("temporal", "motion"))]
    T = Xtr.shape[1]
    aux_head = torch.nn.Linear(W, T)
    groups = [{"params": old + list(head.parameters()), "lr": args.lr},
              {"params": new + list(aux_head.parameters()), "lr": args.new_lr or args.lr}]
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.05)
    base = [g["lr"] for g in groups]
    # training texts
    if args.mode == "qa-all":
        pairs = [(i, q, a, False) for i, qa in enumerate(QAtr) for q, a in qa]
        if args.reverse:  # every motion pair again, its frames played backwards and the answer reversed
            opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
            pairs += [(i, q, opposite[a], True) for i, q, a, _ in pairs if a in opposite]
    m.train()
    zero_init = {k: p for k, p in params.items() if (k.startswith("temporal_mixer") or k == "motion.proj.weight") and ("out_proj.weight" in k or "mlp.2.weight" in k)}
    t0 = time.time()
    aux_gen = torch.Generator().manual_seed(args.seed + 1)
    if args.probe:
        print(json.dumps({"probe": "before", **probe(m, Xtr, Ytr, Xva, Yva)}), flush=True)
    if args.aux_steps:
        aux_phase(m, aux_head, Xtr, Xva, args, aux_gen)
        if args.probe:
            print(json.dumps({"probe": "after aux", **probe(m, Xtr, Ytr, Xva, Yva)}), flush=True)
    n = len(Ytr)
    order = []
    log = []
    for step in range(args.steps):
        lr_f = min(1, (step + 1) / 20) if step < 20 else 0.5 * (1 + math.cos(math.pi * (step - 20) / (args.steps - 20)))
        for g, b in zip(groups, base): g["lr"] = b * lr_f
        if args.mode == "qa-all":
            if len(order) < args.bs: order += random.Random(args.seed * 1000 + step).sample(range(len(pairs)), len(pairs))
            idx, order = order[: args.bs], order[args.bs:]
            X = torch.stack([Xtr[pairs[j][0]].flip(0) if pairs[j][3] else Xtr[pairs[j][0]] for j in idx])
            Y = torch.stack([Ytr[pairs[j][0]] ^ int(pairs[j][3]) for j in idx])  # left<->right, up<->down
            texts = [qa_text(pairs[j][1], WORDS[DIRS.index(pairs[j][2])] if pairs[j][2] in DIRS else pairs[j][2])
                     for j in idx]
            prompts = [pairs[j][1] for j in idx]
        else:
            if len(order) < args.bs: order += random.Random(args.seed * 1000 + step).sample(range(n), n)
            idx, order = order[: args.bs], order[args.bs:]
            X, Y = Xtr[idx], Ytr[idx]
            texts = [qa_text(Qtr[j], WORDS[Ytr[j]]) for j in idx]
            prompts = [Qtr[j] for j in idx]
        pooled, gen = pool(m, inj, X, Y)
        if args.mode == "head":
            feat = pooled if args.readout == "pooled" else gen.mean(1)
            loss = F.cross_entropy(head(feat), Y)
        else:
            ids = m.tokenize(texts)
            ids = ids[:, : int((ids != 0).sum(1).max())]
            _, te = m.coca._encode_text(ids)
            h = decoder_hidden(m.coca.text_decoder, gen, te[:, :-1])
            logits = h @ m.coca.text_decoder.text_projection
            labels = ids[:, 1:].clone()
            if args.answer_loss:  # mask the prompt's targets: "question: ... answer:" is SOT + n tokens + EOT alone
                n_prompt = (m.tokenize([qa_prompt(q) for q in prompts]) != 0).sum(1) - 2
                labels[torch.arange(labels.shape[1])[None, :] < n_prompt[:, None]] = 0
            ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=0,
                                 reduction="none")  # (b*L,) 0 at ignored targets
            keep = labels.reshape(-1) != 0
            if args.focal:  # focal weights (1 - p)^gamma, normalised to mean 1 over the kept targets
                w = (1 - torch.exp(-ce.detach())).pow(args.focal) * keep
                loss = (w * ce).sum() / w.sum().clamp_min(1e-8)
            else:
                loss = ce.sum() / keep.sum()
        aux_acc = None
        if args.answer_head and args.mode != "head":  # the direction head on the pooled embedding, motion rows only
            rows = [r for r, j in enumerate(idx) if args.mode == "qa-motion" or pairs[j][2] in DIRS]
            if rows:
                loss = loss + args.answer_head * F.cross_entropy(head(pooled[rows]), Y[rows])
        if args.aux != "none" and args.aux_weight > 0:
            aux_loss, aux_acc = aux_frame_order(m, aux_head, X, aux_gen)
            loss = loss + args.aux_weight * aux_loss
        opt.zero_grad()
        loss.backward()
        gn = {k.replace("temporal_mixer.", "").replace(".weight", ""): float(p.grad.norm()) for k, p in zero_init.items() if p.grad is not None}
        wn = {k.replace("temporal_mixer.", "").replace(".weight", ""): float(p.detach().norm()) for k, p in zero_init.items()}
        torch.nn.utils.clip_grad_norm_(list(params.values()) + list(head.parameters()), 1.0)
        opt.step()
        if step % args.log_every == 0 or step == args.steps - 1:
            rec = {"step": step, "loss": round(float(loss), 4), "grad": {k: f"{v:.2e}" for k, v in gn.items()},
                   "wnorm": {k: round(v, 3) for k, v in wn.items()}, "aux_acc": aux_acc, "s": round(time.time() - t0)}
            print(json.dumps(rec), flush=True)
    global INJ; INJ = inj
    m.eval()
    with torch.no_grad():
        if args.mode == "head":
            def acc(X, Y):
                ps = []
                for i in range(0, len(Y), 100):
                    pooled, gen = pool(m, INJ, X[i:i+100], Y[i:i+100])
                    ps.append(head(pooled if args.readout == "pooled" else gen.mean(1)).argmax(1))
                p = torch.cat(ps); return float((p == Y).float().mean()), torch.bincount(p, minlength=4).tolist()
            tr, va = acc(Xtr, Ytr), acc(Xva, Yva)
        else:
            tr, va = qa_dir_acc(m, Xtr, Qtr, Ytr), qa_dir_acc(m, Xva, Qva, Yva)
    if args.probe and args.steps:
        print(json.dumps({"probe": "end", **probe(m, Xtr, Ytr, Xva, Yva)}), flush=True)
    if args.aux != "none":
        with torch.no_grad():
            print(json.dumps({"aux_val_acc": round(aux_frame_order(m, aux_head, Xva, aux_gen)[1], 3)}), flush=True)
    print(json.dumps({"args": vars(args), "train_acc": tr, "val_acc": va, "seconds": round(time.time() - t0)}))

if __name__ == "__main__":
    main()
