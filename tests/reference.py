"""Uncached reference decoding: open_clip's full forward re-run at every step (for tests and bench/caption.py)."""

from __future__ import annotations

import math

import torch

SOT, EOT = 49406, 49407


def full_logits(reference, image_embs: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
    """open_clip's own forward over the whole sequence; logits of the last position (N, V)."""
    with torch.no_grad():
        dummy = torch.zeros(seqs.shape[0], image_embs.shape[-1])
        return reference(None, seqs, image_latent=dummy, image_embs=image_embs, output_labels=False)["logits"][:, -1]


def penalise(logits, seqs, step, min_len, rep):
    if rep != 1.0:
        for r in range(logits.shape[0]):
            for t in set(seqs[r].tolist()):
                v = logits[r, t]
                logits[r, t] = v * rep if v < 0 else v / rep
    if step < min_len:
        logits[:, EOT] = -math.inf
    return logits


def reference_greedy(reference, image_embs, prefix, max_len, min_len, rep=1.0):
    """The plain loop: at each step open_clip's full forward, then argmax."""
    seqs = torch.tensor([prefix])
    out = []
    for step in range(max_len):
        logits = penalise(full_logits(reference, image_embs, seqs), seqs, step, min_len, rep)
        tok = int(logits.argmax(-1))
        if tok == EOT:
            break
        out.append(tok)
        seqs = torch.cat([seqs, torch.tensor([[tok]])], 1)
    return out


def reference_beam(reference, image_embs, prefix, k, max_len, min_len, lp=1.0):
    """Straightforward beam search without caches: every beam re-run through open_clip each step.

    Scoring as documented in videococa.models.decoding._beam: hypotheses score sum(log p)/len**lp
    (len counts new tokens with the end token); per step the best k non-ending continuations of the
    best 2k candidates live on; ending candidates among the first k become hypotheses; stop when k
    hypotheses exist and none alive beats the worst at the current length, or at max_len.
    """
    beams = [(0.0, [])]  # (sum log p, generated ids)
    hyps = []
    for step in range(max_len):
        seqs = torch.tensor([prefix + ids for _, ids in beams])
        logits = penalise(full_logits(reference, image_embs.expand(len(beams), -1, -1), seqs), seqs, step, min_len, 1.0)
        logp = logits.log_softmax(-1)
        cands = sorted(
            ((s + logp[b, t].item(), b, t) for b, (s, _) in enumerate(beams) for t in logp[b].topk(2 * k).indices.tolist()),
            key=lambda c: -c[0],
        )[: 2 * k]
        length = step + 1
        new = []
        for rank, (score, b, t) in enumerate(cands):
            if t == EOT:
                if rank < k:
                    hyps.append((score / length**lp, beams[b][1]))
                continue
            new.append((score, beams[b][1] + [t]))
            if len(new) == k:
                break
        hyps = sorted(hyps, key=lambda h: -h[0])[:k]
        best_alive = max(s for s, _ in new)
        if len(hyps) >= k and hyps[-1][0] >= best_alive / length**lp:
            break
        if step == max_len - 1:
            hyps += [(s / length**lp, ids) for s, ids in new]
        beams = new
    return max(hyps, key=lambda h: h[0])
