"""The trajectory motion module on hand-built tokens: positions, velocities, the sign under time reversal."""

from __future__ import annotations

import pytest
import torch

from videococa.models.trajectory import SLOT_FEATURES, TrajectoryMotion

W, G = 32, 4  # width, a 4x4 patch grid


def _moving_blob(path: list[tuple[int, int]], *, prefix: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, T, prefix + G*G, W) tokens: a background vector everywhere and a distinct 'object' vector at
    (row, column) path[t] in frame t. Returns the tokens and the object vector."""
    torch.manual_seed(0)
    background, obj = torch.randn(W), torch.randn(W) * 3
    x = background.repeat(1, len(path), prefix + G * G, 1).clone()  # (1, T, N, W)
    for t, (r, c) in enumerate(path):
        x[0, t, prefix + r * G + c] = obj
    return x, obj


def _tracking(module: TrajectoryMotion, obj: torch.Tensor) -> None:
    """Point every slot's query at the object vector, as training would."""
    with torch.no_grad():
        module.query.weight.copy_(module.ln(obj[None]).repeat(module.slots, 1) * 5)


@torch.no_grad()
def test_positions_follow_the_object_and_reversal_flips_the_velocity():
    m = TrajectoryMotion(W, (G, G), slots=2)
    right, obj = _moving_blob([(1, 0), (1, 1), (1, 2), (1, 3)])
    _tracking(m, obj)
    pos, maps = m.tracks(right)  # (1, T, K, 2), (1, T, P, K)
    assert maps.shape == (1, 4, G * G, 2)
    torch.testing.assert_close(maps.sum(2), torch.ones(1, 4, 2))
    xs, ys = pos[0, :, 0, 0], pos[0, :, 0, 1]
    assert torch.all(xs[1:] > xs[:-1] + 0.3)  # moves right across the grid ([-1, 1], 2/3 per column)
    torch.testing.assert_close(ys, torch.full_like(ys, ys[0].item()))
    f = m.features(right)[0, 0]  # slot 0: velocity, displacement, log mean peak, peak change
    assert f.shape == (SLOT_FEATURES,)
    assert float(f[0]) > 0.5 and abs(float(f[1])) < 1e-4 and float(f[2]) > 1.0  # velocity x, y; displacement x
    back = m.features(right.flip(1))[0, 0]
    torch.testing.assert_close(back[:4], -f[:4])  # time reversed: opposite velocity and displacement
    torch.testing.assert_close(back[4:], f[4:])  # the same peaks
    down, obj = _moving_blob([(0, 2), (1, 2), (2, 2), (3, 2)])  # rows grow downwards in the image
    _tracking(m, obj)
    f = m.features(down)[0, 0]
    assert float(f[1]) > 0.5 and abs(float(f[0])) < 1e-4


@torch.no_grad()
def test_a_new_module_adds_exactly_nothing_and_one_frame_stays_finite():
    m = TrajectoryMotion(W, (G, G))
    x, _ = _moving_blob([(0, 0), (1, 1), (2, 2)])
    assert torch.equal(m(x), x)
    one = m.features(x[:, :1])
    assert torch.isfinite(one).all() and torch.equal(one[..., :4], torch.zeros_like(one[..., :4]))
    with torch.no_grad():  # as if trained: the added motion vector is scaled by each token's RMS
        torch.nn.init.normal_(m.mlp[2].weight, std=0.1)
    moved = m(x) - x
    rms = x.pow(2).mean(-1, keepdim=True).sqrt()
    torch.testing.assert_close(moved / rms, (moved / rms)[:, :1, :1].expand_as(moved))  # one vector, per-token scale
    assert float(moved.abs().max()) > 0


def test_tokens_that_do_not_cover_the_grid_are_refused():
    m = TrajectoryMotion(W, (G, G))
    with pytest.raises(ValueError, match="frame tokens have 9 tokens per frame, fewer than the 4x4 patch grid"):
        m(torch.zeros(1, 2, 9, W))


def _toy_pairs(tmp_path, n_objects: int = 4):
    """Videos of n objects each moving left, and the same videos played backwards (exactly the object moving
    right along the same path), with the motion question. The two videos of an object have the same frames, so
    only frame order tells the answers apart."""
    from videococa.synthetic.benchmark import write_mp4
    from videococa.synthetic.world import VideoSpec, video_spec

    out = []
    for i in range(n_objects):
        base = video_spec(100 + i)
        spec = VideoSpec(seed=base.seed, obj=base.obj, direction="left", background=base.background, tone=base.tone)
        frames = spec.render_frames(8, size=64)
        for direction, fs in (("left", frames), ("right", frames[::-1])):
            path = tmp_path / f"{i}-{direction}.mp4"
            write_mp4(path, fs)
            out.append((str(path), f"which way does the {spec.obj.shape} move?", direction))
    return out


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from videococa import load_model
    from videococa.train import FeatureCache, cache_features

    tmp = tmp_path_factory.mktemp("toy")
    videos = _toy_pairs(tmp)
    tiny = load_model("videococa-tiny")
    cache_features(tiny, [(p, None, None) for p, _, _ in videos], tmp / "fc", num_frames=8, batch_size=8)
    return videos, FeatureCache(tmp / "fc", tiny, 8), tmp


def _answers(model, cache, videos, *, backwards: bool = False) -> list[str]:
    from videococa.train import clip_key

    tokens = torch.stack([cache.get(clip_key(p)) for p, _, _ in videos]).float()  # (V, T, N, W)
    _, gen = model.pool_frame_tokens(tokens.flip(1) if backwards else tokens)
    return model.answer(questions=[q for _, q, _ in videos], video_tokens=gen)


@pytest.mark.parametrize("temporal", ["none", "trajectory"])
def test_after_training_reversed_frames_change_the_answer_only_with_trajectory(toy, temporal):
    import videococa
    from videococa.text import qa_text
    from videococa.train import FinetuneConfig, clip_key, finetune

    videos, cache, tmp = toy
    m = videococa.load_model("videococa-tiny")
    pairs = [(clip_key(p), qa_text(q, a)) for p, q, a in videos]
    cfg = FinetuneConfig(task="qa", epochs=60, batch_size=8, lr=1e-3, warmup=5, temporal=temporal, temporal_lr=1e-2)
    finetune(m, cache, pairs, tmp / f"run-{temporal}", cfg)
    forward, backward = _answers(m, cache, videos), _answers(m, cache, videos, backwards=True)
    truth = [a for _, _, a in videos]
    if temporal == "none":  # flattened pooling sees a set of tokens: the same answer either way, right for half
        assert forward == backward
        assert sum(f == t for f, t in zip(forward, truth)) <= len(truth) // 2
    else:  # the same frames backwards: mostly the opposite answer (the two files differ by compression noise)
        assert forward == truth
        flipped = [{"left": "right", "right": "left"}[t] for t in truth]
        assert sum(b == f for b, f in zip(backward, flipped)) >= 6, backward


def test_answer_head_trains_with_the_run_resumes_and_is_never_saved_as_model_weights(toy):
    import videococa
    from safetensors.torch import load_file
    from videococa.errors import OptionError
    from videococa.text import qa_text
    from videococa.train import FinetuneConfig, clip_key, finetune
    from videococa.train.finetune import qa_answer

    videos, cache, tmp = toy
    assert qa_answer(qa_text("which way does it go? answer: this", "left")) == "left"
    pairs = [(clip_key(p), qa_text(q, a)) for p, q, a in videos]
    cfg = FinetuneConfig(task="qa", epochs=4, batch_size=4, lr=1e-3, warmup=1, temporal="trajectory",
                         answer_head=1.0)
    m = videococa.load_model("videococa-tiny")
    finetune(m, cache, pairs, tmp / "head", cfg, max_steps=3)  # interrupted, then resumed to the end
    info = finetune(videococa.load_model("videococa-tiny"), cache, pairs, tmp / "head", cfg)
    assert info["step"] == 8 and info["config"]["answer_head"] == 1.0
    saved = load_file(str(tmp / "head" / "trained.safetensors"))
    assert not any(k.startswith("answer_head") for k in saved) and any(k.startswith("temporal_trajectory") for k in saved)
    head = torch.load(tmp / "head" / "state.pt", weights_only=False)["answer_head"]
    assert head["answer_head.weight"].shape == (2, 128)  # two answers in the training pairs: left, right
    videococa.load_model("videococa-tiny", finetuned=tmp / "head")  # loads: the head is not a model weight
    with pytest.raises(OptionError, match="answer_head must be >= 0 and is for task qa only"):
        finetune(m, cache, pairs, tmp / "cap", FinetuneConfig(task="caption", answer_head=1.0))
