"""Temporal variants, the contrastive loss, retrieval finetuning, TensorBoard logs and DDP under torchrun."""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import videococa
from videococa.eval.runner import encode_items
from videococa.errors import OptionError
from videococa.train import FeatureCache, FinetuneConfig, cache_features, finetune, training_pairs
from videococa.models.videococa import _TemporalBlock
from videococa.train.finetune import TASKS, contrastive_loss

from test_finetune import _items


def _log(run):
    with open(run / "log.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def cache8(tiny_model, easy_videos, tmp_path):
    cache_features(tiny_model, [(p, None, None) for p in easy_videos], tmp_path / "fc8", num_frames=4, batch_size=5)
    return FeatureCache(tmp_path / "fc8", tiny_model, 4)


@pytest.mark.parametrize("variant,scaled", [("embedding", False), ("transformer", False), ("divided", False),
                                            ("transformer", True), ("divided", True), ("trajectory", False)])
def test_every_variant_starts_at_the_zero_shot_model(variant, scaled, cache8, easy_videos):
    m = videococa.load_model("videococa-tiny")
    tokens = torch.stack([cache8.get(k) for k, _ in training_pairs(_items(easy_videos), "caption")]).float()
    emb0, gen0 = m.pool_frame_tokens(tokens)
    m.enable_temporal(variant, layers=2, scaled=scaled)
    assert m.temporal == variant and (m.temporal_mixer is None or m.temporal_mixer.scaled == scaled)
    emb1, gen1 = m.pool_frame_tokens(tokens)
    assert torch.equal(emb1, emb0) and torch.equal(gen1, gen0)  # exactly, not approximately
    e2, g2 = m.pool(tokens)  # the training path (differentiable, all videos in one pass) is the inference path
    e2 = F.normalize(e2, dim=-1)
    torch.testing.assert_close(e2, emb0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g2, gen0, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown temporal variant 'lstm'; choose one of: none, embedding, transformer, divided, trajectory"):
        m.enable_temporal("lstm")


@pytest.mark.parametrize("variant", ["transformer", "divided"])
def test_only_temporal_modules_see_frame_order(variant, cache8, easy_videos):
    """Flattened pooling is blind to frame order (a set of tokens); a trained temporal transformer is not."""
    m = videococa.load_model("videococa-tiny")
    # four clearly different frames (the first frame of four videos) as one clip: (1, T=4, N, W)
    tokens = torch.stack([cache8.lookup((p, None, None))[0] for p in easy_videos[:4]]).float()[None]
    backwards = tokens.flip(1)
    torch.testing.assert_close(m.pool_frame_tokens(backwards)[0], m.pool_frame_tokens(tokens)[0], atol=1e-5, rtol=1e-4)
    m.enable_temporal(variant)
    mixer = m.temporal_mixer
    with torch.no_grad():
        for block in [*mixer.blocks, *getattr(mixer, "space_blocks", [])]:  # as if trained: non-zero output layers
            torch.nn.init.normal_(block.attn.out_proj.weight, std=0.5)
            torch.nn.init.normal_(block.mlp[2].weight, std=0.5)
    a, b = m.pool_frame_tokens(tokens)[0], m.pool_frame_tokens(backwards)[0]
    assert float((a - b).abs().max()) > 1e-3


def test_scaled_blocks_add_in_proportion_to_the_token_scale():
    """A scaled block's residual grows with its input's scale (LayerNorm makes the branch itself scale-free); an
    unscaled one adds the same whatever the tokens' size, so it stays small next to large frozen tokens."""
    torch.manual_seed(0)
    x = torch.randn(3, 4, 64)  # (S, T, W)
    pos = torch.zeros(4, 64)
    for scaled, ratio in ((True, 10.0), (False, 1.0)):
        block = _TemporalBlock(64, 2, scaled=scaled)
        with torch.no_grad():
            torch.nn.init.normal_(block.attn.out_proj.weight, std=0.2)
            if scaled:  # both branches scale; unscaled, the MLP's LayerNorm input x + attn(x) is not scale-free
                torch.nn.init.normal_(block.mlp[2].weight, std=0.2)
            small, large = block(x, pos) - x, block(10 * x, pos) - 10 * x
        assert float(small.abs().max()) > 0.1
        torch.testing.assert_close(large, ratio * small, atol=1e-3, rtol=1e-3)


def test_temporal_lr_and_scaled_mixer_train_and_load_back(cache8, easy_videos, tmp_path):
    m = videococa.load_model("videococa-tiny")
    pairs = training_pairs(_items(easy_videos), "caption")
    decoder = dict(m.named_parameters())["coca.text_decoder.resblocks.0.mlp.c_fc.weight"]
    before = decoder.detach().clone()
    cfg = FinetuneConfig(epochs=1, batch_size=5, lr=1e-4, warmup=2, temporal="transformer", temporal_scaled=True,
                         temporal_lr=1e-2)
    info = finetune(m, cache8, pairs, tmp_path / "run", cfg, max_steps=1)
    # one AdamW step moves each weight by about its group's lr (x 1/2: the first warmup step)
    moved_new = float(m.temporal_mixer.blocks[0].mlp[2].weight.abs().max())  # zero at step 0
    moved_old = float((decoder - before).abs().max())
    assert 2e-3 < moved_new <= 5.1e-3 and 1e-5 < moved_old <= 5.1e-5, (moved_new, moved_old)
    assert info["config"]["temporal_lr"] == 1e-2 and info["config"]["temporal_scaled"] is True
    loaded = videococa.load_model("videococa-tiny", finetuned=tmp_path / "run")
    assert loaded.temporal_mixer.scaled and loaded.fingerprint() == m.fingerprint()
    feats = torch.stack([cache8.get(k) for k, _ in pairs])
    torch.testing.assert_close(loaded.pool_frame_tokens(feats)[0], m.pool_frame_tokens(feats)[0])


def test_contrastive_loss_matches_a_hand_computation():
    torch.manual_seed(0)
    v, t = F.normalize(torch.randn(4, 8), dim=-1), F.normalize(torch.randn(4, 8), dim=-1)
    scale = torch.tensor(math.log(10.0))
    sim = 10 * v @ t.T
    by_hand = sum(-torch.log_softmax(sim[i], 0)[i] - torch.log_softmax(sim[:, i], 0)[i] for i in range(4)) / 8
    torch.testing.assert_close(contrastive_loss(v, t, ["a", "b", "c", "d"], scale), by_hand)
    # rows 0 and 1 are two captions of one clip: each is not the other's negative
    keep = [[0, 2, 3], [1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3]]
    by_hand = sum(-torch.log_softmax(sim[i, keep[i]], 0)[keep[i].index(i)]
                  - torch.log_softmax(sim[keep[i], i], 0)[keep[i].index(i)] for i in range(4)) / 8
    torch.testing.assert_close(contrastive_loss(v, t, ["a", "a", "c", "d"], scale), by_hand)


def test_retrieval_finetuning_trains_the_temperature_and_aligns_videos(cache8, easy_videos, tmp_path):
    m = videococa.load_model("videococa-tiny")
    right = training_pairs(_items(easy_videos), "retrieval")
    # each video is paired with the next video's caption: a mapping the zero-shot model gets wrong
    pairs = [(k, right[(i + 1) % len(right)][1]) for i, (k, _) in enumerate(right)]
    texts = [t for _, t in pairs]
    feats = torch.stack([cache8.get(k) for k, _ in pairs])

    def text_to_video_correct(model):
        v, _ = model.pool_frame_tokens(feats)
        return int((model.encode_text(texts) @ v.T).argmax(1).eq(torch.arange(len(texts))).sum())

    before_scale, before_correct = m.logit_scale, text_to_video_correct(m)
    cfg = FinetuneConfig(task="retrieval+caption", epochs=30, batch_size=5, lr=3e-3, warmup=2, temporal="transformer")
    assert cfg.weights() == (1.0, 2.0)
    info = finetune(m, cache8, pairs, tmp_path / "run", cfg)
    log = _log(tmp_path / "run")
    assert float(log[-1]["contrastive"]) < 0.5 * float(log[0]["contrastive"])
    assert float(log[-1]["caption"]) < 0.5 * float(log[0]["caption"])
    for row in log:  # the logged total is the weighted sum
        assert float(row["loss"]) == pytest.approx(float(row["contrastive"]) + 2 * float(row["caption"]), abs=1e-4)
    assert before_correct == 0 and text_to_video_correct(m) == 5 and m.logit_scale != before_scale
    saved = load_file(str(tmp_path / "run" / "trained.safetensors"))
    assert {"coca.logit_scale", "coca.visual.proj", "temporal_embedding"} <= set(saved)
    assert any(k.startswith("temporal_mixer.blocks.0.attn") for k in saved)
    assert not any(k.startswith(("coca.visual.transformer", "coca.text.")) for k in saved)  # frozen stays out
    loaded = videococa.load_model("videococa-tiny", finetuned=tmp_path / "run")
    assert loaded.temporal == "transformer" and loaded.fingerprint() == m.fingerprint()
    torch.testing.assert_close(loaded.pool_frame_tokens(feats)[0], m.pool_frame_tokens(feats)[0])
    assert info["config"]["task"] == "retrieval+caption"


def test_text_tower_trains_only_when_asked(cache8, easy_videos, tmp_path):
    m = videococa.load_model("videococa-tiny")
    pairs = training_pairs(_items(easy_videos), "retrieval")
    text_before = m.coca.text.transformer.resblocks[0].mlp.c_fc.weight.clone()
    finetune(m, cache8, pairs, tmp_path / "run", FinetuneConfig(task="retrieval", epochs=1, batch_size=5,
                                                               train_text=True))
    assert not torch.equal(m.coca.text.transformer.resblocks[0].mlp.c_fc.weight, text_before)
    assert any(k.startswith("coca.text.") for k in load_file(str(tmp_path / "run" / "trained.safetensors")))
    with pytest.raises(ValueError, match="unknown finetuning task 'ranking'"):
        FinetuneConfig(task="ranking").weights()
    with pytest.raises(ValueError, match="not both 0"):
        FinetuneConfig(task="caption", caption_weight=0).weights()


def test_tensorboard_log_holds_the_csv_numbers(cache8, easy_videos, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    m = videococa.load_model("videococa-tiny")
    pairs = training_pairs(_items(easy_videos), "caption")
    finetune(m, cache8, pairs, tmp_path / "run", FinetuneConfig(epochs=2, batch_size=5),
             evaluate=lambda model: {"val score": 0.5})
    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    got = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    want = [(int(r["step"]), float(r["loss"])) for r in _log(tmp_path / "run")]
    assert [s for s, _ in got] == [s for s, _ in want] == [1, 2]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-4)
    assert [e.value for e in acc.Scalars("val/val score")] == [0.5, 0.5]


def test_validation_from_the_feature_cache_matches_decoding_the_videos(cache8, tiny_model, easy_videos):
    items = _items(easy_videos)
    live, _, rows, _ = encode_items(tiny_model, items, num_frames=4, pooling="attentional", return_tokens=False,
                                    cache=False)
    stored, _, rows2, _ = encode_items(tiny_model, items, num_frames=4, pooling="attentional", return_tokens=False,
                                       frame_tokens=cache8.lookup)
    assert rows == rows2
    torch.testing.assert_close(stored, live, atol=2e-3, rtol=0)  # fp16 storage of the tokens


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_under_torchrun_match_one_process(tmp_path, capsys):
    """DDP (gloo, 2 CPU processes) gives the same losses and weights as 1 process with the same global batch."""
    from videococa.cli import main
    from videococa.synthetic.benchmark import make_benchmark

    root = make_benchmark(tmp_path / "syn", num_videos=6, seed=5, num_frames=8, size=64)
    other = make_benchmark(tmp_path / "syn2", num_videos=2, seed=6, num_frames=8, size=64)
    ann = str(root / "annotations.json")
    assert main(["cache-features", ann, str(other / "annotations.json"), "--dataset", "synthetic", "--task",
                 "caption", "--out", str(tmp_path / "fc"), "--frames", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cached"] == 8  # both annotation files
    args = ["finetune", "--task", "retrieval+caption", "--dataset", "synthetic", "--train", ann, "--features",
            str(tmp_path / "fc"), "--epochs", "2", "--batch-size", "4", "--accumulate", "2", "--lr", "1e-3",
            "--temporal", "transformer", "--json"]
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    one = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert one["train_pairs"] % 2 == 0  # so both runs see every pair
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the package is installed; PYTHONPATH, if set, is inherited
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(_free_port()), "-m", "videococa"] + args
                          + ["--out", str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(proc.stdout.strip().splitlines()[-1])  # printed once, by process 0
    assert two["processes"] == 2 and one["processes"] == 1 and two["step"] == one["step"] >= 4
    for a, b in zip(_log(tmp_path / "one"), _log(tmp_path / "two"), strict=True):
        for k in ("loss", "contrastive", "caption"):
            assert float(b[k]) == pytest.approx(float(a[k]), rel=1e-4, abs=1e-5), (k, a, b)
    wa, wb = (load_file(str(tmp_path / r / "trained.safetensors")) for r in ("one", "two"))
    assert set(wa) == set(wb)
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-4, rtol=1e-3)


def test_cli_task_choices_are_the_library_tasks():
    from videococa.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    finetune_parser = sub.choices["finetune"]
    task = next(a for a in finetune_parser._actions if a.dest == "task")
    assert tuple(task.choices) == TASKS


def test_cli_temporal_choices_are_the_library_variants():
    from videococa.cli import build_parser
    from videococa.models.videococa import TEMPORALS

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    temporal = next(a for a in sub.choices["finetune"]._actions if a.dest == "temporal")
    assert tuple(temporal.choices) == TEMPORALS


def test_answer_only_loss_keeps_only_the_answer_and_end_token(tiny_model):
    from videococa.models.decoding import decoder_hidden
    from videococa.text import qa_text
    from videococa.train.finetune import _Losses, answer_targets

    texts = [qa_text("what colour is the circle?", "dark red"), qa_text("how many shapes are there?", "two")]
    ids = tiny_model.tokenize(texts)
    targets = answer_targets(tiny_model, ids, texts)
    for row, answer in zip(targets, ["dark red", "two"]):
        kept = row[row != 0].tolist()
        assert kept[-1] == tiny_model.eot_token_id and tiny_model.decode_ids(kept) == answer
    assert torch.equal(targets[targets != 0], ids[:, 1:][targets != 0])
    torch.manual_seed(0)
    tokens = torch.randn(2, 4, 65, 128) * 9  # (B, T, N, W)
    n = int((targets != 0).sum())
    with torch.no_grad():
        loss = _Losses(tiny_model, (0.0, 1.0), train_text=False)(tokens, ids, ["a", "b"], n, 1.0, targets=targets)[0]
        _, gen = tiny_model.pool(tokens)
        trimmed = ids[:, : int((ids != 0).sum(1).max())]
        _, text_embs = tiny_model.coca._encode_text(trimmed)
        logits = decoder_hidden(tiny_model.coca.text_decoder, gen, text_embs[:, :-1]) @ \
            tiny_model.coca.text_decoder.text_projection
        by_hand = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[:, : trimmed.shape[1] - 1].reshape(-1),
                                  ignore_index=0)
    torch.testing.assert_close(loss, by_hand)
    with pytest.raises(OptionError, match="answer_only is for task qa only"):
        finetune(tiny_model, None, [], "unused", FinetuneConfig(task="caption", answer_only=True))
