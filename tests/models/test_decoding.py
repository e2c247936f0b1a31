"""Tier 2: the KV-cached decoder against open_clip's full forward, recomputed at every step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from videococa.models.decoding import warp
from videococa.models.videococa import normalize_answer
from videococa.testing import EOT, SOT, reference_beam, reference_greedy


@pytest.fixture(scope="module")
def gen_tokens(model, frames):
    _, tokens = model.encode_video(frames, return_tokens=True)  # (2, 255, 512)
    return tokens


def test_greedy_equals_open_clip_full_forward(model, reference, gen_tokens):
    out = model.generate(video_tokens=gen_tokens, method="greedy", max_len=20, min_len=5, return_details=True)
    for i in range(2):
        ref = reference_greedy(reference, gen_tokens[i : i + 1], [SOT], 20, 5)
        assert out[i].token_ids == ref
        assert out[i].text == model.decode_ids(ref)


def test_greedy_with_prompt_and_repetition_penalty(model, reference, gen_tokens):
    # "!" is token 0, open_clip's pad id: its legacy CLS mask then hides the next key position
    prompt = "a video of wow!& a"
    prefix = [SOT, *model.tokenizer.encode(prompt)]
    assert 0 in prefix
    out = model.generate(video_tokens=gen_tokens, method="greedy", max_len=12, min_len=2, prompt=prompt,
                         repetition_penalty=1.5, return_details=True)
    for i in range(2):
        assert out[i].token_ids == reference_greedy(reference, gen_tokens[i : i + 1], prefix, 12, 2, rep=1.5)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_beam_equals_uncached_reference(model, reference, gen_tokens, num_beams):
    out = model.generate(video_tokens=gen_tokens, method="beam", num_beams=num_beams, max_len=8, min_len=2,
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
        out = model.generate(video_tokens=gen_tokens, method="beam", num_beams=3, max_len=10, min_len=1,
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
    both = model.generate(video_tokens=gen_tokens, method=method, num_beams=3, max_len=10, return_details=True)
    for i in range(2):
        alone = model.generate(video_tokens=gen_tokens[i : i + 1], method=method, num_beams=3, max_len=10,
                               return_details=True)[0]
        assert alone.token_ids == both[i].token_ids
        assert alone.score == pytest.approx(both[i].score, abs=1e-4)


def test_frames_and_tokens_give_the_same_captions(model, frames, gen_tokens):
    a = model.generate(frames, method="greedy", max_len=8)
    b = model.generate(video_tokens=gen_tokens, method="greedy", max_len=8)
    assert a == b


def test_prompts_of_different_lengths_in_one_batch(model, gen_tokens):
    mixed = model.generate(video_tokens=gen_tokens, method="greedy", max_len=6, prompt=["a", "a photo of a"])
    one = model.generate(video_tokens=gen_tokens[:1], method="greedy", max_len=6, prompt="a")
    two = model.generate(video_tokens=gen_tokens[1:], method="greedy", max_len=6, prompt="a photo of a")
    assert mixed == one + two


def test_seeded_sampling_is_reproducible(model, gen_tokens):
    a = model.generate(video_tokens=gen_tokens, method="top_p", top_p=0.95, seed=7, max_len=10)
    b = model.generate(video_tokens=gen_tokens, method="top_p", top_p=0.95, seed=7, max_len=10)
    c = model.generate(video_tokens=gen_tokens, method="top_p", top_p=0.95, seed=8, max_len=10)
    assert a == b and a != c
    k1 = model.generate(video_tokens=gen_tokens, method="top_k", top_k=1, seed=3, max_len=10)
    assert k1 == model.generate(video_tokens=gen_tokens, method="greedy", max_len=10)  # top-1 sampling is greedy


def test_answer_strips_prompt_and_normalises(model, gen_tokens):
    answers = model.answer(video_tokens=gen_tokens, questions=["what is this?", "who is there?"], max_len=6)
    raw = model.generate(video_tokens=gen_tokens, method="greedy", max_len=6, min_len=1,
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
        model.generate(video_tokens=gen_tokens, method="nucleus")
    with pytest.raises(ValueError, match="either frames .* or video_tokens"):
        model.generate(frames, video_tokens=gen_tokens)
    with pytest.raises(ValueError, match=r"tokens must have shape \(B, Q-1, 512\)"):
        model.generate(video_tokens=torch.zeros(2, 255, 7))
    with pytest.raises(ValueError, match="exceeds the model's 76-token context"):
        model.generate(video_tokens=gen_tokens, prompt="word " * 60, max_len=30)
    with pytest.raises(ValueError, match="one prompt per video: 2 videos, 3 prompts"):
        model.generate(video_tokens=gen_tokens, prompt=["a", "b", "c"])
    with pytest.raises(ValueError, match="one question per video: 2 videos, 1 questions"):
        model.answer(video_tokens=gen_tokens, questions=["why?"])
    with pytest.raises(ValueError, match="min_len must be between 0 and max_len=3"):
        model.generate(video_tokens=gen_tokens, max_len=3, min_len=5)


def test_suppressed_words_are_never_generated(model, gen_tokens):
    base = model.generate(video_tokens=gen_tokens, method="greedy", max_len=8, return_details=True)
    word = model.tokenizer.decode([base[0].token_ids[0]]).strip()
    assert model._single_token_ids([word]) == [base[0].token_ids[0]]
    out = model.generate(video_tokens=gen_tokens, method="beam", num_beams=3, max_len=8, suppress=[word],
                         return_details=True)
    greedy = model.generate(video_tokens=gen_tokens, method="greedy", max_len=8, suppress=[word], return_details=True)
    for c in out + greedy:
        assert base[0].token_ids[0] not in c.token_ids
    with pytest.raises(ValueError, match="suppress word 'a red car' is 3 tokens"):
        model.generate(video_tokens=gen_tokens, suppress=["a red car"])


def test_a_generation_config_and_keyword_overrides_decode_alike(tiny_model, easy_videos):
    import dataclasses

    import pytest

    from videococa import GenerationConfig, OptionError

    clip = tiny_model.read_video(easy_videos[0], num_frames=2)
    _, tokens = tiny_model.encode_video(clip.frames[None], return_tokens=True)
    cfg = GenerationConfig(method="greedy", max_len=12)
    by_config = tiny_model.generate(video_tokens=tokens, config=cfg, return_details=True)
    by_words = tiny_model.generate(video_tokens=tokens, method="greedy", max_len=12, return_details=True)
    assert by_config == by_words and "red" in by_config[0].text.split()
    beams = tiny_model.generate(video_tokens=tokens, config=cfg, method="beam", num_beams=3)  # overrides win
    assert beams == tiny_model.generate(video_tokens=tokens, config=dataclasses.replace(cfg, method="beam", num_beams=3))
    with pytest.raises(OptionError, match="top_p must be in"):
        tiny_model.generate(video_tokens=tokens, method="top_p", top_p=1.5)
    with pytest.raises(TypeError, match="unexpected keyword arguments: beams"):
        tiny_model.generate(video_tokens=tokens, beams=3)


# ---------------------------------------------------------------- the bf16 path and its prepared weights
def test_packed_linear_equals_f_linear():
    """oneDNN's packed bf16 layout (used where it is available) multiplies as F.linear does, for few rows."""
    from videococa.models.decoding import _Linear

    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(96, 64, generator=g) * 0.1, torch.randn(96, generator=g)
    packed, plain = _Linear(w, b, torch.bfloat16, pack=True), _Linear(w, b, torch.bfloat16)
    if packed.packed is None:
        pytest.skip("no oneDNN packed bf16 linear in this torch build")
    assert plain.packed is None and packed.w is None  # one copy of the weights
    for rows in (1, 6, 32):
        x = torch.randn(rows, 1, 64, generator=g)  # fp32 in: cast as autocast casts
        out = packed(x)
        assert out.dtype == torch.bfloat16 and out.shape == (rows, 1, 96)
        torch.testing.assert_close(out, F.linear(x.bfloat16(), w.bfloat16(), b.bfloat16()), rtol=8e-3, atol=8e-3)
        torch.testing.assert_close(out, plain(x), rtol=8e-3, atol=8e-3)


def test_prepared_weights_are_reused_and_remade_after_a_change(model):
    from videococa.models.decoding import decoder_weights

    coca = model.coca
    first = decoder_weights(coca, torch.bfloat16)
    assert decoder_weights(coca, torch.bfloat16) is first
    assert first.text[0].qkv.dtype == torch.bfloat16
    fp32 = decoder_weights(coca, torch.float32)
    assert fp32.vocab is None and fp32.text[0].qkv.w.data_ptr() == coca.text.transformer.resblocks[0].attn.in_proj_weight.data_ptr()
    bias = coca.text_decoder.resblocks[0].mlp.c_fc.bias
    old = bias.detach().clone()
    try:
        with torch.no_grad():
            bias.add_(1.0)  # in place, as an optimiser step changes it
        again = decoder_weights(coca, torch.bfloat16)
        assert again is not first
        torch.testing.assert_close(again.dec[0].fc.b.float(), (old + 1).bfloat16().float())
    finally:
        with torch.no_grad():
            bias.copy_(old)


def test_bf16_cached_logits_match_the_uncached_forward_in_bf16(model, reference, gen_tokens):
    """bf16 is not token-identical to anything by construction (rounding differs with the shapes multiplied);
    its logits stay within bf16 rounding of open_clip's own forward under autocast, packed or not."""
    from videococa.models.decoding import DecodeState
    from videococa.testing import full_logits

    seqs = torch.tensor([[SOT, 320, 1125, 539, 320]] * 2)  # "a photo of a"
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = full_logits(reference, gen_tokens, seqs).float()
        outs = []
        for pack in (True, False):
            state = DecodeState(model.coca, gen_tokens, 1, 8, pack=pack)
            state.forward(seqs[:, :3])
            outs.append(state.forward(seqs[:, 3:]))  # two more tokens on the cache: logits of the last
    scale = ref.std().item()
    for out in outs:
        assert out.dtype == torch.float32 and out.shape == ref.shape
        assert (out - ref).abs().max().item() < 0.05 * scale
        assert (out.argmax(-1) == ref.argmax(-1)).all()
    torch.testing.assert_close(outs[0], outs[1], rtol=0.02, atol=0.02 * scale)


def test_bf16_greedy_agrees_with_fp32_on_the_first_tokens(model, gen_tokens):
    fp32 = model.generate(video_tokens=gen_tokens, method="greedy", max_len=6, min_len=6, return_details=True)
    model.precision = "bf16"
    try:
        bf16 = model.generate(video_tokens=gen_tokens, method="greedy", max_len=6, min_len=6, return_details=True)
    finally:
        model.precision = "fp32"
    assert [c.token_ids[:2] for c in bf16] == [c.token_ids[:2] for c in fp32]
