"""Tier 2: VideoCoCa's video and text encoders against open_clip's own forward, on random weights."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F

TOL = 1e-5


def test_single_frame_equals_open_clip_image_path(model, reference, frames):
    images = frames[:, 0]  # (B, 3, H, W)
    emb, tokens = model.encode_video(images[:, None], return_tokens=True)
    with torch.no_grad():
        ref_emb, ref_tokens = reference._encode_image(images)
    assert emb.shape == (2, 512) and tokens.shape == (2, 255, 512)
    assert (emb - ref_emb).abs().max() <= TOL
    assert (tokens - ref_tokens).abs().max() <= TOL
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-6)


def test_frame_order_does_not_change_attentional_result(model, frames):
    emb, tokens = model.encode_video(frames, return_tokens=True)
    perm = torch.tensor([2, 0, 3, 1])
    emb_p, tokens_p = model.encode_video(frames[:, perm], return_tokens=True)
    assert (emb - emb_p).abs().max() <= TOL
    assert (tokens - tokens_p).abs().max() <= TOL


@pytest.mark.parametrize("k", [2, 3])
def test_repeating_every_frame_does_not_change_attentional_result(model, frames, k):
    emb, tokens = model.encode_video(frames[:, :2], return_tokens=True)
    emb_r, tokens_r = model.encode_video(frames[:, :2].repeat_interleave(k, dim=1), return_tokens=True)
    assert (emb - emb_r).abs().max() <= TOL
    assert (tokens - tokens_r).abs().max() <= TOL


def test_attentional_pooling_is_one_pass_over_all_frame_tokens(model, reference, frames):
    """Reference: open_clip's submodules called by hand on the concatenated frame tokens."""
    v = reference.visual
    with torch.no_grad():
        per_frame = [v.transformer(v._embeds(frames[:, t])) for t in range(frames.shape[1])]  # T x (B, N, W)
        x = v.attn_pool(torch.cat(per_frame, dim=1))  # (B, 256, E)
        x = v.ln_post(x)
        ref = F.normalize(x[:, 0] @ v.proj, dim=-1)
    emb, tokens = model.encode_video(frames, return_tokens=True)
    assert (emb - ref).abs().max() <= TOL
    assert (tokens - x[:, 1:]).abs().max() <= TOL
    # and it is not the per-frame mean
    assert (emb - model.encode_video(frames, pooling="mean")).abs().max() > 1e-3


def test_mean_pooling_averages_open_clip_image_embeddings(model, reference, frames):
    with torch.no_grad():
        per_frame = reference.encode_image(frames.flatten(0, 1)).unflatten(0, (2, 4))  # (B, T, E)
    expected = F.normalize(per_frame.mean(1), dim=-1)
    assert (model.encode_video(frames, pooling="mean") - expected).abs().max() <= TOL


def test_frame_chunking_does_not_change_results(model, frames):
    emb = model.encode_video(frames)
    old = model.frame_batch_size
    model.frame_batch_size = 3
    try:
        emb_chunked = model.encode_video(frames)
    finally:
        model.frame_batch_size = old
    assert (emb - emb_chunked).abs().max() <= TOL


def test_encode_frames_then_pool_equals_encode_video(model, frames):
    frame_tokens = model.encode_frames(frames)
    assert frame_tokens.shape == (2, 4, 50, 768)  # (B, T, N, W): 7x7 patches + class token
    emb, tokens = model.pool_frame_tokens(frame_tokens)
    emb2, tokens2 = model.encode_video(frames, return_tokens=True)
    assert torch.equal(emb, emb2) and torch.equal(tokens, tokens2)


def test_only_the_public_encoders_enter_inference_mode(tiny_model):
    """encode_frames, encode_video and pool_frame_tokens give inference tensors; `pool`, the path finetuning trains
    through, keeps the caller's grad mode (one differentiable pooling path)."""
    size = tiny_model.info.image_size
    frames = torch.rand(2, 3, 3, size, size)
    frame_tokens = tiny_model.encode_frames(frames)
    emb, video_tokens = tiny_model.encode_video(frames, return_tokens=True)
    assert frame_tokens.is_inference() and emb.is_inference() and video_tokens.is_inference()
    assert all(t.is_inference() for t in tiny_model.pool_frame_tokens(frame_tokens))
    x = frame_tokens.clone().requires_grad_(True)  # a normal tensor again, outside inference_mode
    pooled, gen = tiny_model.pool(x)
    (pooled.sum() + gen.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    torch.testing.assert_close(F.normalize(pooled.detach(), dim=-1), emb, atol=1e-5, rtol=1e-5)


def test_sixty_four_frames_accepted(model):
    frames = torch.randn(1, 64, 3, 224, 224)
    assert model.encode_video(frames).shape == (1, 512)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((2, 3, 224, 224), r"shape \(B, T, 3, H, W\)"),
        ((1, 65, 3, 224, 224), "T=65 frames per video; VideoCoCa takes 1 to 64"),
        ((1, 2, 3, 112, 112), "112x112 pixels; model 'coca_ViT-B-32' needs 224x224"),
        ((1, 2, 4, 224, 224), r"shape \(B, T, 3, H, W\)"),
    ],
)
def test_bad_frame_shapes_are_named(model, shape, message):
    with pytest.raises(ValueError, match=message):
        model.encode_video(torch.zeros(shape))


def test_unknown_pooling_lists_choices(model, frames):
    with pytest.raises(ValueError, match="unknown pooling 'max'; choose one of: attentional, mean"):
        model.encode_video(frames, pooling="max")


def test_integer_frames_other_than_uint8_rejected(model):
    with pytest.raises(TypeError, match="uint8 RGB or a float tensor normalised for the model, got dtype torch.int64"):
        model.encode_video(torch.zeros(1, 1, 3, 224, 224, dtype=torch.int64))


def test_wrong_size_float_frames_point_to_the_models_preprocess(model):
    with pytest.raises(ValueError, match=r"needs 224x224 float frames \(read them with model.read_video\(path\)"):
        model.encode_video(torch.zeros(1, 2, 3, 64, 64))


def test_encode_text_equals_open_clip(model, reference):
    texts = ["a dog running on the beach", "a person playing guitar", "x"]
    tok = open_clip.get_tokenizer("coca_ViT-B-32")(texts)
    with torch.no_grad():
        ref = reference.encode_text(tok, normalize=True)
    out = model.encode_text(texts)
    assert out.shape == (3, 512)
    assert (out - ref).abs().max() <= TOL


def test_long_text_is_truncated_with_warning(model):
    long = "word " * 200
    with pytest.warns(UserWarning, match="1 text\\(s\\) longer than the model's 76 tokens were truncated"):
        out = model.encode_text([long, "short"])
    assert torch.isfinite(out).all()


def test_empty_text_list_is_an_error(model):
    with pytest.raises(ValueError, match="texts is empty"):
        model.encode_text([])
    with pytest.raises(TypeError, match="not a single string"):
        model.encode_text("a dog")
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        model.encode_text(["a", 3])


def test_bf16_matches_fp32(weights_file, frames, model):
    from videococa import load_model

    bf16 = load_model("coca_ViT-B-32", pretrained=weights_file, precision="bf16")
    cos = F.cosine_similarity(bf16.encode_video(frames), model.encode_video(frames), dim=-1)
    assert cos.min() >= 0.999, cos
    cos_t = F.cosine_similarity(bf16.encode_text(["a red car"]), model.encode_text(["a red car"]), dim=-1)
    assert cos_t.min() >= 0.999


@pytest.mark.gpu
def test_cuda_matches_cpu(weights_file, frames, model):
    from videococa import load_model

    gpu = load_model("coca_ViT-B-32", pretrained=weights_file, device="cuda")
    out = gpu.encode_video(frames).cpu()
    assert (out - model.encode_video(frames)).abs().max() <= 1e-3
