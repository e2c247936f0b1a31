"""Tier 2: the KV-cached decoder against open_clip's full forward, recomputed at every step."""

from __future__ import annotations

import math

import pytest
import torch

from videococa.models.decoding import warp
from videococa.models.videococa import normalize_answer

SOT, EOT = 49406, 49407


@pytest.fixture(scope="module")
def gen_tokens(model, frames):
    _, tokens = model.encode_video(frames, return_tokens=True)  # (2, 255, 512)
    return tokens


def full_logits(reference, image_embs: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
    """open_clip's own forward over the whole sequence; logits of the last position (N, V)."""
    with torch.no_grad():
        dummy = torch.zeros(seqs.shape[0], 512)
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


def test_greedy_equals_open_clip_full_forward(model, reference, gen_tokens):
    out = model.generate(tokens=gen_tokens, method="greedy", max_len=20, min_len=5, return_details=True)
    for i in range(2):
        ref = reference_greedy(reference, gen_tokens[i : i + 1], [SOT], 20, 5)
        assert out[i].token_ids == ref
        assert out[i].text == model.decode_ids(ref)


def test_greedy_with_prompt_and_repetition_penalty(model, reference, gen_tokens):
    # "!" is token 0, open_clip's pad id: its legacy CLS mask then hides the next key position
    prompt = "a video of wow!& a"
    prefix = [SOT, *model.tokenizer.encode(prompt)]
    assert 0 in prefix
    out = model.generate(tokens=gen_tokens, method="greedy", max_len=12, min_len=2, prompt=prompt,
                         repetition_penalty=1.5, return_details=True)
    for i in range(2):
        assert out[i].token_ids == reference_greedy(reference, gen_tokens[i : i + 1], prefix, 12, 2, rep=1.5)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_beam_equals_uncached_reference(model, reference, gen_tokens, num_beams):
    out = model.generate(tokens=gen_tokens, method="beam", num_beams=num_beams, max_len=8, min_len=2,
                         return_details=True)
    for i in range(2):
        score, ids = reference_beam(reference, gen_tokens[i : i + 1], [SOT], num_beams, 8, 2)
        assert out[i].token_ids == [t for t in ids if t != EOT]
        assert out[i].score == pytest.approx(score, abs=1e-4)


def test_beam_with_length_penalty_finishes_early_hypotheses(model, reference, gen_tokens):
    """Bias the end token so hypotheses finish at different lengths and the early-stop rule matters."""
    bias = torch.zeros(49408)
    bias[EOT] = 6.0
    proj = model.coca.text_decoder.text_projection
    ref_proj = reference.text_decoder.text_projection
    old = proj.detach().clone()
    h = model.coca.text_decoder.ln_final(gen_tokens[0, :1]).detach()
    try:
        with torch.no_grad():  # push the end-token column towards the mean hidden state
            direction = h[0] / h[0].norm() ** 2
            proj[:, EOT] += direction * 6.0
            ref_proj.copy_(proj)
        out = model.generate(tokens=gen_tokens, method="beam", num_beams=3, max_len=10, min_len=1,
                             length_penalty=0.5, return_details=True)
        for i in range(2):
            score, ids = reference_beam(reference, gen_tokens[i : i + 1], [SOT], 3, 10, 1, lp=0.5)
            assert out[i].token_ids == [t for t in ids if t != EOT]
            assert out[i].score == pytest.approx(score, abs=1e-4)
    finally:
        with torch.no_grad():
            proj.copy_(old)
            ref_proj.copy_(old)


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_batch_equals_each_video_alone(model, gen_tokens, method):
    both = model.generate(tokens=gen_tokens, method=method, num_beams=3, max_len=10, return_details=True)
    for i in range(2):
        alone = model.generate(tokens=gen_tokens[i : i + 1], method=method, num_beams=3, max_len=10,
                               return_details=True)[0]
        assert alone.token_ids == both[i].token_ids
        assert alone.score == pytest.approx(both[i].score, abs=1e-4)


def test_frames_and_tokens_give_the_same_captions(model, frames, gen_tokens):
    a = model.generate(frames, method="greedy", max_len=8)
    b = model.generate(tokens=gen_tokens, method="greedy", max_len=8)
    assert a == b


def test_prompts_of_different_lengths_in_one_batch(model, gen_tokens):
    mixed = model.generate(tokens=gen_tokens, method="greedy", max_len=6, prompt=["a", "a photo of a"])
    one = model.generate(tokens=gen_tokens[:1], method="greedy", max_len=6, prompt="a")
    two = model.generate(tokens=gen_tokens[1:], method="greedy", max_len=6, prompt="a photo of a")
    assert mixed == one + two


def test_seeded_sampling_is_reproducible(model, gen_tokens):
    a = model.generate(tokens=gen_tokens, method="top_p", top_p=0.95, seed=7, max_len=10)
    b = model.generate(tokens=gen_tokens, method="top_p", top_p=0.95, seed=7, max_len=10)
    c = model.generate(tokens=gen_tokens, method="top_p", top_p=0.95, seed=8, max_len=10)
    assert a == b and a != c
    k1 = model.generate(tokens=gen_tokens, method="top_k", top_k=1, seed=3, max_len=10)
    assert k1 == model.generate(tokens=gen_tokens, method="greedy", max_len=10)  # top-1 sampling is greedy


def test_answer_strips_prompt_and_normalises(model, gen_tokens):
    answers = model.answer(tokens=gen_tokens, questions=["what is this?", "who is there?"], max_len=6)
    raw = model.generate(tokens=gen_tokens, method="greedy", max_len=6, min_len=1,
                         prompt=["question: what is this? answer:", "question: who is there? answer:"])
    assert answers == [normalize_answer(r) for r in raw]
    assert all("question" not in a for a in answers) or any("question" in r for r in raw)


def test_normalize_answer():
    assert normalize_answer("  The RED circle!! ") == "the red circle"
    assert normalize_answer("left.") == "left"
    assert normalize_answer("it's blue, not green") == "it s blue not green"


def test_warp_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.1]]))
    assert torch.isinf(warp(logits, temperature=1.0, top_k=2, top_p=None)).tolist() == [[False, False, True, True]]
    # nucleus 0.7: 0.5 alone is below it, 0.5 + 0.25 reaches it -> two tokens kept
    assert torch.isinf(warp(logits, temperature=1.0, top_k=None, top_p=0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(warp(logits, temperature=1.0, top_k=None, top_p=0.5)).tolist() == [[False, True, True, True]]
    assert torch.allclose(warp(logits, temperature=2.0, top_k=None, top_p=None), logits / 2)


def test_generation_argument_errors(model, gen_tokens, frames):
    with pytest.raises(ValueError, match="unknown method 'nucleus'; choose one of: greedy, beam, top_k, top_p"):
        model.generate(tokens=gen_tokens, method="nucleus")
    with pytest.raises(ValueError, match="either frames .* or tokens"):
        model.generate(frames, tokens=gen_tokens)
    with pytest.raises(ValueError, match=r"tokens must have shape \(B, Q-1, 512\)"):
        model.generate(tokens=torch.zeros(2, 255, 7))
    with pytest.raises(ValueError, match="exceeds the model's 76-token context"):
        model.generate(tokens=gen_tokens, prompt="word " * 60, max_len=30)
    with pytest.raises(ValueError, match="one prompt per video: 2 videos, 3 prompts"):
        model.generate(tokens=gen_tokens, prompt=["a", "b", "c"])
    with pytest.raises(ValueError, match="one question per video: 2 videos, 1 questions"):
        model.answer(tokens=gen_tokens, questions=["why?"])
    with pytest.raises(ValueError, match="min_len must be between 0 and max_len=3"):
        model.generate(tokens=gen_tokens, max_len=3, min_len=5)
