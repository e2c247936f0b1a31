"""Feature cache and finetuning on cached tokens: resumable, checked, exact resume, zero-shot at step 0."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import videococa
from videococa.data.readers import Item
from videococa.limits import MAX_FRAMES
from videococa.models.finetuned import RunDir
from videococa.train import (FeatureCache, FeatureCacheError, FinetuneConfig, FinetuneError, cache_features,
                             clip_key, finetune, training_pairs)
from videococa.tasks import clipkeys  # where cache_features reads its clips (tasks.clipkeys.read_clip_key)
from videococa.train.finetune import caption_loss
from videococa.testing import EASY_VIDEOS


@pytest.fixture
def fresh_tiny():
    return videococa.load_model("videococa-tiny")


def _items(paths):
    return [Item(f"v{i}", p, captions=[f"a {c} {s} moving {d}"], question=f"what colour is the {s}?", answers=[c])
            for i, (p, (s, c, d)) in enumerate(zip(paths, EASY_VIDEOS))]


@pytest.fixture
def cache_dir(tiny_model, easy_videos, tmp_path):
    report = cache_features(tiny_model, [(p, None, None) for p in easy_videos], tmp_path / "fc", num_frames=2,
                            shard_size=2, batch_size=2)
    assert (report.cached, report.skipped, report.failed) == (5, 0, [])
    return tmp_path / "fc"


def test_cache_holds_the_encoder_tokens_and_resumes(tiny_model, easy_videos, cache_dir):
    cache = FeatureCache(cache_dir, tiny_model, 2)
    frames = videococa.read_video(easy_videos[3], 2, size=tiny_model.info.image_size).frames[None]
    want = tiny_model.encode_frames(frames)[0].half()  # (T, N, W)
    torch.testing.assert_close(cache.get(clip_key(easy_videos[3])), want)
    assert len(cache) == 5 and len(list(cache_dir.glob("shard-*.safetensors"))) == 3
    again = cache_features(tiny_model, [(p, None, None) for p in easy_videos], cache_dir, num_frames=2)
    assert (again.cached, again.skipped) == (0, 5)


def test_an_interrupted_cache_keeps_committed_clips(tiny_model, easy_videos, tmp_path, monkeypatch):
    real, calls = clipkeys.read_video, []

    def flaky(*a, **k):
        calls.append(a[0])
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(clipkeys, "read_video", flaky)
    with pytest.raises(KeyboardInterrupt):
        cache_features(tiny_model, [(p, None, None) for p in easy_videos], tmp_path / "fc", num_frames=2, batch_size=1,
                       shard_size=2)
    assert len(FeatureCache(tmp_path / "fc")) == 3
    monkeypatch.setattr(clipkeys, "read_video", real)
    rest = cache_features(tiny_model, [(p, None, None) for p in easy_videos], tmp_path / "fc", num_frames=2)
    assert (rest.cached, rest.skipped) == (2, 3) and len(FeatureCache(tmp_path / "fc")) == 5


def test_mismatched_or_damaged_caches_are_refused(tiny_model, model, cache_dir, easy_videos):
    with pytest.raises(FeatureCacheError, match="holds 2 frames per clip, not 8"):
        FeatureCache(cache_dir, tiny_model, 8)
    with pytest.raises(FeatureCacheError, match="made with videococa-tiny.*not coca_ViT-B-32"):
        cache_features(model, [(easy_videos[0], None, None)], cache_dir, num_frames=2)
    shard = sorted(cache_dir.glob("shard-*.safetensors"))[0]
    d = load_file(str(shard))
    save_file({k: v + 1 for k, v in d.items()}, str(shard))
    cache = FeatureCache(cache_dir, tiny_model, 2)
    with pytest.raises(FeatureCacheError, match="fails its checksum"):
        cache.get(clip_key(easy_videos[0]))
    with pytest.raises(FeatureCacheError, match="no feature cache at"):
        FeatureCache(cache_dir / "nope")


def test_step_zero_is_the_zero_shot_model(fresh_tiny, easy_videos):
    frames = videococa.read_video(easy_videos[0], 4, size=fresh_tiny.info.image_size).frames[None]
    tokens = fresh_tiny.encode_frames(frames)
    emb0, gen0 = fresh_tiny.pool_frame_tokens(tokens)
    fresh_tiny.enable_temporal("embedding")
    emb1, gen1 = fresh_tiny.pool_frame_tokens(tokens)
    torch.testing.assert_close(emb1, emb0)
    torch.testing.assert_close(gen1, gen0)
    torch.testing.assert_close(fresh_tiny.pool(tokens)[1], gen0, atol=1e-5, rtol=1e-5)  # train path = inference


def test_finetuning_lowers_the_loss_and_loads_back(fresh_tiny, cache_dir, easy_videos, tmp_path):
    items = _items(easy_videos)
    pairs = training_pairs(items, "caption") + [("/not/cached.mp4||", "a caption")]
    cache = FeatureCache(cache_dir, fresh_tiny, 2)
    feats = torch.stack([cache.get(k) for k, _ in pairs[:5]])
    with torch.no_grad():
        before = float(caption_loss(fresh_tiny, feats, [t for _, t in pairs[:5]]))
    cfg = FinetuneConfig(epochs=10, batch_size=5, lr=1e-3, warmup=2, temporal="embedding")
    base = fresh_tiny.provenance()
    info = finetune(fresh_tiny, cache, pairs, tmp_path / "run", cfg)
    assert info["base"] == base  # the model as given, recorded like every other artefact's model
    with torch.no_grad():
        after = float(caption_loss(fresh_tiny, feats, [t for _, t in pairs[:5]]))
    assert after < 0.5 * before, (before, after)
    assert info["missing_from_cache"] == 1 and info["train_pairs"] == 5 and info["step"] == 10
    loaded = videococa.load_model("videococa-tiny", finetuned=tmp_path / "run")
    frames = videococa.read_video(easy_videos[1], 2, size=loaded.info.image_size).frames[None]
    torch.testing.assert_close(loaded.encode_video(frames), fresh_tiny.encode_video(frames))
    assert loaded.fingerprint() == fresh_tiny.fingerprint() != videococa.load_model("videococa-tiny").fingerprint()
    with pytest.raises(FinetuneError, match="was finetuned from videococa-tiny"):
        videococa.load_model("coca_ViT-B-32", finetuned=tmp_path / "run")


def test_resume_gives_the_same_next_steps_as_an_uninterrupted_run(cache_dir, easy_videos, tmp_path):
    pairs = training_pairs(_items(easy_videos), "qa") + training_pairs(_items(easy_videos), "caption")
    cfg = FinetuneConfig(task="qa", epochs=3, batch_size=4, lr=5e-4, warmup=2, temporal="embedding")

    def losses(run):
        with open(run / "log.csv") as f:
            return [float(r["loss"]) for r in csv.DictReader(f)]

    a = videococa.load_model("videococa-tiny")
    finetune(a, FeatureCache(cache_dir), pairs, tmp_path / "straight", cfg)
    b = videococa.load_model("videococa-tiny")
    finetune(b, FeatureCache(cache_dir), pairs, tmp_path / "resumed", cfg, max_steps=4)  # "interrupted" after 4
    b2 = videococa.load_model("videococa-tiny")
    finetune(b2, FeatureCache(cache_dir), pairs, tmp_path / "resumed", cfg)
    assert len(losses(tmp_path / "straight")) == len(losses(tmp_path / "resumed")) == 9
    assert losses(tmp_path / "resumed")[4:] == pytest.approx(losses(tmp_path / "straight")[4:], rel=1e-5)
    for k, v in load_file(str(tmp_path / "straight" / "trained.safetensors")).items():
        torch.testing.assert_close(load_file(str(tmp_path / "resumed" / "trained.safetensors"))[k], v)
    with pytest.raises(FinetuneError, match="resume it with the same settings"):
        finetune(videococa.load_model("videococa-tiny"), FeatureCache(cache_dir), pairs, tmp_path / "resumed",
                 FinetuneConfig(task="caption", epochs=3, batch_size=4, temporal="embedding"))
    with pytest.raises(FinetuneError, match="none of the 1 training pairs"):
        finetune(videococa.load_model("videococa-tiny"), FeatureCache(cache_dir), [("x||", "y")], tmp_path / "r3", cfg)


def test_a_run_directory_writes_reads_and_checks_its_base(tmp_path):
    run = RunDir(tmp_path / "run")
    with pytest.raises(FinetuneError, match="is not a finetuning run directory"):
        run.read_info()
    run.path.mkdir()
    assert not run.can_resume()
    run.save({"base": {"model": "m", "pretrained": "p", "fingerprint": "abc"}, "config": {}}, {"w": torch.ones(2)},
             {"step": 3})
    assert sorted(p.name for p in run.path.iterdir()) == ["run.json", "state.pt", "trained.safetensors"]  # no temps
    assert run.read_info("abc")["base"]["model"] == "m" and run.can_resume() and run.read_state() == {"step": 3}
    assert run.read_trained()["w"].tolist() == [1.0, 1.0]
    with pytest.raises(FinetuneError, match=r"was finetuned from m \[p\] \(weights abc\); the base is xyz$"):
        run.read_info("xyz", against="the base is xyz")


def test_a_run_written_before_run_json_recorded_provenance_still_applies(tmp_path):
    """Older run.json files record the base as model, pretrained and fingerprint only (and fewer config keys)."""
    base = videococa.load_model("videococa-tiny")
    proj = base.coca.visual.proj.detach() * 0.5
    offsets = torch.randn(MAX_FRAMES, base.coca.visual.transformer.width)
    run = tmp_path / "old-run"
    run.mkdir()
    save_file({"coca.visual.proj": proj.contiguous(), "temporal_embedding": offsets}, str(run / "trained.safetensors"))
    (run / "run.json").write_text(json.dumps({
        "base": {"model": "videococa-tiny", "pretrained": "bundled", "fingerprint": base.fingerprint()},
        "config": {"task": "caption", "epochs": 1, "temporal": "embedding"}, "step": 1, "history": []}))
    loaded = videococa.load_model("videococa-tiny", finetuned=run)
    assert loaded.temporal == "embedding"
    assert torch.equal(loaded.coca.visual.proj, proj) and torch.equal(loaded.temporal_embedding.detach(), offsets)
    with pytest.raises(FinetuneError, match=r"was finetuned from videococa-tiny \[bundled\] \(weights "):
        RunDir(run).read_info("0123456789abcdef", against="not this base")


def test_cli_cache_features_finetune_and_use(tmp_path, capsys):
    from videococa.cli import main
    from videococa.synthetic.benchmark import make_benchmark

    root = make_benchmark(tmp_path / "syn", num_videos=6, seed=11, num_frames=8, size=64)
    ann = str(root / "annotations.json")
    assert main(["cache-features", ann, "--dataset", "synthetic", "--task", "qa", "--out", str(tmp_path / "fc"),
                 "--frames", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cached"] == 6
    code = main(["finetune", "--task", "qa", "--dataset", "synthetic", "--train", ann, "--val", ann,
                 "--features", str(tmp_path / "fc"), "--out", str(tmp_path / "run"), "--epochs", "2",
                 "--batch-size", "8", "--temporal", "embedding", "--json"])
    info = json.loads(capsys.readouterr().out)
    assert code == 0 and [h["epoch"] for h in info["history"]] == [1, 2]
    assert "synthetic accuracy" in info["history"][0] and info["config"]["temporal"] == "embedding"
    assert main(["ask", str(root / "videos" / "0000.mp4"), "what colour is the square?", "--frames", "2",
                 "--finetuned", str(tmp_path / "run"), "--json"]) == 0
    assert "answer" in json.loads(capsys.readouterr().out)
    code = main(["finetune", "--task", "qa", "--dataset", "synthetic", "--train", ann,
                 "--features", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r2")])
    assert code == 2 and "no feature cache at" in capsys.readouterr().err


def _msrvtt_like(root, *, train: int, validate: int, test: int) -> tuple[str, str]:
    """Synthetic-world videos videoN.mp4 with MSR-VTT's two annotation files: train_val_videodatainfo.json (splits
    train and validate) and test_videodatainfo.json (test). Captions in a style of our own ("red circle going
    left", "the circle is red"), not the synthetic benchmark's, so the zero-shot model does not write them."""
    from videococa.synthetic.benchmark import write_mp4
    from videococa.synthetic.world import video_spec

    (root / "videos").mkdir(parents=True)
    splits = ["train"] * train + ["validate"] * validate + ["test"] * test
    docs = {"train_val": {"videos": [], "sentences": []}, "test": {"videos": [], "sentences": []}}
    for i, split in enumerate(splits):
        spec = video_spec(7000 + i, late_share=0.0, occluded_share=0.0, distractor_share=0.0)
        write_mp4(root / "videos" / f"video{i}.mp4", spec.render_frames(8, 64))
        doc = docs["test" if split == "test" else "train_val"]
        o = spec.obj
        doc["videos"].append({"video_id": f"video{i}", "split": split, "id": i})
        doc["sentences"] += [{"video_id": f"video{i}", "caption": c, "sen_id": len(doc["sentences"]) + k}
                             for k, c in enumerate([f"{o.colour} {o.shape} going {spec.direction}",
                                                    f"the {o.shape} is {o.colour}"])]
    for name, doc in docs.items():
        (root / f"{name}_videodatainfo.json").write_text(json.dumps(doc))
    return str(root / "train_val_videodatainfo.json"), str(root / "test_videodatainfo.json")


def test_caption_finetuning_on_msrvtt_format_files_validates_with_cider(tmp_path, capsys):
    """Issue #19: `finetune --task caption --dataset msrvtt` validated with retrieval metrics and could not read the
    train split; now it trains on train, validates on test with CIDEr-D, and beats the zero-shot model there."""
    from videococa.cli import main

    train_val, test = _msrvtt_like(tmp_path, train=24, validate=4, test=8)
    videos, common = str(tmp_path / "videos"), ["--frames", "2", "--json"]
    assert main(["cache-features", train_val, test, "--dataset", "msrvtt", "--videos", videos,
                 "--out", str(tmp_path / "fc"), *common]) == 0
    assert json.loads(capsys.readouterr().out)["cached"] == 36  # every split of both files
    assert main(["cache-features", train_val, "--dataset", "msrvtt", "--split", "validate", "--videos", videos,
                 "--out", str(tmp_path / "fc-val"), *common]) == 0
    assert json.loads(capsys.readouterr().out)["cached"] == 4
    assert main(["eval", "caption", "--dataset", "msrvtt", "--annotations", test, "--videos", videos, *common]) == 0
    zero_shot = json.loads(capsys.readouterr().out)["results"][0]
    assert (zero_shot["protocol"]["dataset"], zero_shot["protocol"]["items"]) == ("msrvtt-test", 8)
    code = main(["finetune", "--task", "caption", "--dataset", "msrvtt", "--train", train_val, "--val", test,
                 "--videos", videos, "--features", str(tmp_path / "fc"), "--out", str(tmp_path / "run"),
                 "--epochs", "3", "--batch-size", "8", "--lr", "1e-3", *common])
    info = json.loads(capsys.readouterr().out)
    assert code == 0 and info["train_pairs"] == 48  # the 24 train videos x 2 captions; validate is not trained on
    assert info["config"]["extra"]["val_sets"] == ["msrvtt-test"]  # --val's file has no validate split: test
    last = info["history"][-1]
    assert not any(k.startswith("msrvtt-test t2v") for k in last)  # caption metrics, not retrieval
    assert {"msrvtt-test CIDEr", "msrvtt-test BLEU-4", "msrvtt-test ROUGE-L"} <= set(last)
    assert last["msrvtt-test CIDEr"] > zero_shot["metrics"]["CIDEr"] + 50, (zero_shot["metrics"]["CIDEr"], last)
    code = main(["finetune", "--task", "caption", "--dataset", "msrvtt", "--train", train_val, "--split", "test",
                 "--videos", videos, "--features", str(tmp_path / "fc"), "--out", str(tmp_path / "r2")])
    err = capsys.readouterr().err
    assert code == 2 and "no videos in split 'test'; the splits it has: train, validate" in err
