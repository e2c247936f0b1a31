"""Tier 3: videococa-tiny, trained on still images only, works on synthetic videos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import videococa
from videococa.synthetic.benchmark import load_benchmark, make_benchmark, write_mp4
from videococa.synthetic.world import CLASS_TEMPLATES
from videococa.synthetic.world import CLASS_NAMES, SHAPES, Obj, VideoSpec
from videococa.models.loading import TINY_DIR
from videococa.tasks.classify import ensemble_text_embeddings

pytestmark = pytest.mark.skipif("videococa-tiny" not in videococa.list_models(), reason="tiny model not bundled")


def load_frames(model, paths: list[str], num_frames: int) -> torch.Tensor:
    """(N, T, 3, S, S) frames of every video, read at the model's input size."""
    info = model.info
    return torch.stack([videococa.read_video(p, num_frames, size=info.image_size, mean=info.image_mean,
                                             std=info.image_std).frames for p in paths])


def class_embeddings(model) -> torch.Tensor:
    """(C, E) one embedding per class of the synthetic world, ensembled over the benchmark's templates."""
    return ensemble_text_embeddings(model, CLASS_NAMES, CLASS_TEMPLATES)


@pytest.fixture(scope="module")
def tiny():
    return videococa.load_model("videococa-tiny")


@pytest.fixture(scope="module")
def small_benchmark(tmp_path_factory):
    return make_benchmark(tmp_path_factory.mktemp("bench"), num_videos=60, seed=7)


def test_tiny_is_listed_and_small():
    assert videococa.list_models()["videococa-tiny"] == ["bundled"]
    assert (TINY_DIR / "model.safetensors").stat().st_size <= 40 * 2**20


def test_zero_shot_classification_well_above_chance(tiny, small_benchmark):
    from videococa.eval.runner import evaluate_dataset, read_synthetic

    result = evaluate_dataset(tiny, read_synthetic(small_benchmark / "annotations.json", "classify"), cache=False)
    top1 = result["metrics"]["top1"] / 100
    chance = 1 / len(CLASS_NAMES)
    # the issue asks 3x chance; measured 65.0% here (31x; the previous model 18.3%), so 20x leaves a wide margin
    assert top1 >= 20 * chance, f"top-1 {top1:.1%} vs chance {chance:.1%}"


def test_zero_shot_tells_shapes_apart_at_every_size(tiny):
    """Shape, the hard part of the synthetic world: before the fifth training round large objects were at chance."""
    import random

    from videococa.synthetic.world import random_scene, render
    from videococa.video.transforms import preprocess_frames

    scenes = [random_scene(random.Random(888 * 10**6 + i), max_objects=1) for i in range(150)]  # unseen seeds
    info = tiny.info
    x = preprocess_frames(np.stack([render(sc, 64) for sc in scenes]), 64, info.image_mean, info.image_std)
    with torch.no_grad():
        pred = (tiny.encode_video(x[:, None]) @ class_embeddings(tiny).T).argmax(1)  # one-frame videos
    right = np.array([CLASS_NAMES[p].split()[-1] == sc.objects[0].shape for p, sc in zip(pred, scenes)])
    sizes = np.array([sc.objects[0].size for sc in scenes])
    by_size = {s: right[sizes == s].mean() for s in ("small", "medium", "large")}
    # chance is 1/6; measured 95% here (94 / 95 / 98% by size; the previous model 25%, large 23%)
    assert right.mean() >= 0.75 and min(by_size.values()) >= 0.6, (right.mean(), by_size)


def _easy_video(tmp_path, shape, colour, name, appears_at=0.0):
    spec = VideoSpec(5, Obj(shape, colour, "large", 0.5, 0.5), "right", "plain", (128, 128, 128), appears_at=appears_at)
    path = tmp_path / f"{name}.mp4"
    write_mp4(path, spec.render_frames(16, 128))
    return str(path)


EASY = [("circle", "red"), ("square", "blue"), ("triangle", "green"), ("star", "yellow"), ("hexagon", "purple")]


def test_captions_of_easy_videos_name_the_colour(tiny, tmp_path):
    paths = [_easy_video(tmp_path, s, c, f"{c}_{s}") for s, c in EASY]
    captions = tiny.generate(load_frames(tiny, paths, 8), method="beam", num_beams=3, max_len=16)
    assert all(c in cap.split() for (_, c), cap in zip(EASY, captions)), captions


def test_captions_of_easy_videos_name_colour_and_shape(tiny, tmp_path):
    paths = [_easy_video(tmp_path, s, c, f"{c}_{s}") for s, c in EASY]
    frames = load_frames(tiny, paths, 8)
    captions = tiny.generate(frames, method="beam", num_beams=3, max_len=16)
    hits = [c in cap.split() and s in cap.split() for (s, c), cap in zip(EASY, captions)]
    assert sum(hits) >= 4, list(zip(EASY, captions))


def test_colour_seen_only_in_later_frames_needs_all_frames(tiny, tmp_path):
    """The point of pooling over all frames, on what the tiny model knows well: colour."""
    path = _easy_video(tmp_path, "diamond", "orange", "late", appears_at=0.6)
    frames = load_frames(tiny, [path], 8)  # frames 0-4 show only the background
    assert tiny.answer(frames, "what colour is the diamond?") == ["orange"]
    assert tiny.answer(frames[:, :1], "what colour is the diamond?") != ["orange"]
    cls = class_embeddings(tiny)
    orange = [i for i, name in enumerate(CLASS_NAMES) if name.startswith("orange ")]
    rank_all = (tiny.encode_video(frames) @ cls.T)[0].argsort(descending=True)[:1].item()
    rank_first = (tiny.encode_video(frames[:, :1]) @ cls.T)[0].argsort(descending=True)[:1].item()
    assert rank_all in orange and rank_first not in orange


def test_object_seen_only_in_later_frames_needs_all_frames(tiny, tmp_path):
    path = _easy_video(tmp_path, "diamond", "orange", "late", appears_at=0.6)
    frames = load_frames(tiny, [path], 8)  # frames 0-4 show only the background
    cls = class_embeddings(tiny)
    target = list(CLASS_NAMES).index("orange diamond")
    all_frames = (tiny.encode_video(frames) @ cls.T)[0]
    first_only = (tiny.encode_video(frames[:, :1]) @ cls.T)[0]
    assert int(all_frames.argmax()) == target
    assert int(first_only.argmax()) != target
    assert tiny.answer(frames, "what colour is the diamond?") == ["orange"]


def _train_tiny_module():
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "train_tiny.py"
    spec = importlib.util.spec_from_file_location("train_tiny", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_batches_come_in_groups_sharing_colour_and_background():
    """Hard negatives: within a group of 4 only shapes, sizes and places tell the captions apart."""
    import open_clip
    from videococa.synthetic.world import COLOURS

    train_tiny = _train_tiny_module()
    tokenizer = open_clip.SimpleTokenizer(context_length=32)

    def group_colours(hard_group: int):
        """The batch images and, per run of 4 captions, the colour words they use."""
        args = train_tiny.parse_args(["--batch-size", "16", "--qa-share", "0", "--hard-group", str(hard_group)])
        images, tokens, _, _ = train_tiny.batch(3, args, tokenizer, torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1))
        texts = [tokenizer.decode(t[(t != 0)].tolist()) for t in tokens]
        return images, [{w for t in texts[g:g + 4] for w in t.split() if w in COLOURS} for g in range(0, 16, 4)]

    images, colours = group_colours(4)
    assert all(len(c) == 1 for c in colours), colours
    assert len(set().union(*colours)) > 1, "groups draw their colours independently"
    assert images.shape == (16, 3, 64, 64)
    _, colours = group_colours(1)
    assert any(len(c) > 1 for c in colours), "with --hard-group 1 images are drawn freely"


def test_dense_shape_targets_and_patch_encoding():
    """--dense-shape: each image's per-patch shape coverage, and the patch tokens of open_clip's own forward."""
    import open_clip
    from videococa.synthetic.world import image_sample_with_scene, shape_coverage

    train_tiny = _train_tiny_module()
    tokenizer = open_clip.SimpleTokenizer(context_length=32)
    zero, one = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    args = train_tiny.parse_args(["--batch-size", "6", "--dense-shape", "0.5"])
    images, _, _, coverage = train_tiny.batch(2, args, tokenizer, zero, one)
    assert coverage.shape == (6, 7, 8, 8)
    for i in range(6):  # image i of step 2 is seed 2 * 6 + i
        _, _, scene = image_sample_with_scene(2 * 6 + i, 64, qa_share=args.qa_share)
        assert torch.equal(coverage[i], torch.from_numpy(shape_coverage(scene, 64, 8)))
    off = ["--batch-size", "6", "--dense-shape", "0", "--shape-label", "0", "--vision-warmup", "0"]
    assert train_tiny.batch(2, train_tiny.parse_args(off), tokenizer, zero, one)[3] is None  # no maps when both are off
    # --shape-label reads the same maps: its targets are exactly the shapes each scene drew
    args = train_tiny.parse_args(["--batch-size", "6", "--shape-label", "1"])
    present = train_tiny.shapes_present(train_tiny.batch(2, args, tokenizer, zero, one)[3])
    for i in range(6):
        _, _, scene = image_sample_with_scene(2 * 6 + i, 64, qa_share=args.qa_share)
        assert [SHAPES[k] for k in present[i].nonzero()[:, 0]] == sorted({o.shape for o in scene.objects}, key=SHAPES.index)

    cfg = json.loads((Path(train_tiny.__file__).parent / "tiny_config.json").read_text())
    torch.manual_seed(0)
    model = open_clip.CoCa(**{k: v for k, v in cfg.items() if k != "custom_text"}).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    latent, tokens, patches = train_tiny.encode_image_with_patches(model.visual, x)
    ref_latent, ref_tokens = model._encode_image(x, normalize=False)  # the shape label reads it unnormalised
    assert torch.equal(latent, ref_latent) and torch.equal(tokens, ref_tokens)
    assert patches.shape == (2, 64, cfg["vision_cfg"]["width"])  # the 8 x 8 patch tokens, class token dropped


def test_vision_warmup_trains_the_image_tower_alone():
    """--vision-warmup: only the image tower and the shape heads move; the text side and the decoder's queries do not."""
    import open_clip

    train_tiny = _train_tiny_module()
    with pytest.raises(SystemExit):  # nothing to warm up on
        train_tiny.parse_args(["--vision-warmup", "5", "--dense-shape", "0", "--shape-label", "0"])
    args = train_tiny.parse_args(["--vision-warmup", "3", "--warmup", "2", "--batch-size", "4",
                                  "--dense-shape", "1", "--shape-label", "1"])
    cfg = json.loads((Path(train_tiny.__file__).parent / "tiny_config.json").read_text())
    torch.manual_seed(0)
    model = open_clip.CoCa(**{k: v for k, v in cfg.items() if k != "custom_text"})
    torch.nn.init.normal_(model.text_decoder.text_projection, std=0.02)  # open_clip leaves it torch.empty (NaN-prone)
    dense = torch.nn.Linear(cfg["vision_cfg"]["width"], 1 + len(SHAPES))
    label = torch.nn.Linear(cfg["embed_dim"], len(SHAPES))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    label_before = label.weight.detach().clone()
    _, opt = train_tiny.make_optimizer(args, model, dense, label)  # the script's own parameter groups
    log = []
    zero, one = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    tokenizer = open_clip.SimpleTokenizer(context_length=32)
    train_tiny.vision_warmup(args, model.visual, dense, label, opt, tokenizer, zero, one, log)
    after = model.state_dict()
    moved = {k for k in after if not torch.equal(after[k], before[k])}
    assert moved and all(k.startswith("visual.") for k in moved), sorted(moved)
    assert "visual.conv1.weight" in moved and "visual.proj" in moved
    query = "visual.attn_pool.query"  # row 0 pools the contrastive embedding; rows 1..255 feed the decoder
    assert not torch.equal(after[query][0], before[query][0]) and torch.equal(after[query][1:], before[query][1:])
    assert not torch.equal(label.weight, label_before)
    assert [r["step"] for r in log] == [-3, -1] and set(log[0]) >= {"dense", "shape_label", "lr"}
    assert log[0]["lr"] == pytest.approx(args.lr / 2)  # the ramp over --warmup steps, then constant
    # its batches come from their own seeds, not the CoCa steps'
    first = train_tiny.batch(0, args, tokenizer, zero, one)[0]
    warm = train_tiny.batch(0, args, tokenizer, zero, one, offset=train_tiny.VISION_WARMUP_SEEDS)[0]
    assert not torch.equal(first, warm)


def test_patch_whitening_decorrelates_the_patch_embedding():
    """--patch-whiten: conv1's outputs on the patches it was fitted to have covariance diag(eig / (eig + eps))."""
    import open_clip

    train_tiny = _train_tiny_module()
    visual = open_clip.transformer.VisionTransformer(image_size=16, patch_size=4, width=24, layers=1, heads=1,
                                                     mlp_ratio=2.0, output_dim=8)
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(48, 48, generator=g)  # correlated, unequal-variance patch pixels
    images = (torch.randn(400 * 16, 48, generator=g) @ mix).reshape(400, 4, 4, 3, 4, 4).permute(0, 3, 1, 4, 2, 5)
    images = images.reshape(400, 3, 16, 16)  # (B, 3, 16, 16): the 4 x 4 grid of (3, 4, 4) patches
    train_tiny.patch_whitening(visual, images, eps=0.0)
    with torch.no_grad():
        out = visual.conv1(images)  # (B, 24, 4, 4)
    feats = out.permute(0, 2, 3, 1).reshape(-1, 24).double()
    cov = (feats - feats.mean(0)).T @ (feats - feats.mean(0)) / len(feats)
    assert torch.allclose(cov, torch.eye(24, dtype=torch.float64), atol=2e-3)  # 24 of 48 directions kept, all unit variance
    train_tiny.patch_whitening(visual, images, eps=1e6)  # eps >> eigenvalues: W ~ V.T / 1000, output variance ~ eigenvalue / 1e6
    with torch.no_grad():
        feats = visual.conv1(images).permute(0, 2, 3, 1).reshape(-1, 24).double()
    patches = images.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 2, 3, 1, 4, 5).reshape(-1, 48).double()
    top = torch.linalg.eigvalsh(torch.cov(patches.T, correction=0)).flip(0)[:24]  # the 24 largest, descending
    assert torch.allclose(feats.var(0, correction=0) * 1e6, top, rtol=1e-3)  # the principal directions, largest first


def test_training_script_reproduces_the_shipped_log(tmp_path):
    """The first 51 vision warm-up steps (inside the lr ramp, so the schedule does not depend on the totals)
    match the shipped log, then one CoCa step runs."""
    train_tiny = _train_tiny_module()
    shipped = json.loads((TINY_DIR / "training.json").read_text())
    n = shipped["args"]["vision_warmup"]
    assert shipped["args"]["warmup"] > 50 and n > 50
    train_tiny.main(["--vision-warmup", "51", "--steps", "1", "--out", str(tmp_path)])
    log = {r["step"]: r for r in json.loads((tmp_path / "training.json").read_text())["log"]}
    ref = {r["step"]: r for r in shipped["log"]}
    for i in (0, 50):
        for key in ("loss", "dense", "shape_label"):
            assert log[i - 51][key] == pytest.approx(ref[i - n][key], rel=0.02), (i, key)
    assert {"contrastive", "caption", "dense", "shape_label"} <= set(log[0])


def test_cached_greedy_equals_open_clip_forward_on_tiny(tiny, small_benchmark):
    from videococa.testing import SOT, reference_beam, reference_greedy

    items, _ = load_benchmark(small_benchmark)
    frames = load_frames(tiny, [it.path for it in items[:3]], 8)
    _, tokens = tiny.encode_video(frames, return_tokens=True)
    out = tiny.generate(video_tokens=tokens, method="greedy", max_len=16, min_len=2, suppress=[], return_details=True)
    beam = tiny.generate(video_tokens=tokens[:1], method="beam", num_beams=3, max_len=12, min_len=2, suppress=[],
                         return_details=True)
    for i in range(3):
        assert out[i].token_ids == reference_greedy(tiny.coca, tokens[i : i + 1], [SOT], 16, 2)
    score, ids = reference_beam(tiny.coca, tokens[:1], [SOT], 3, 12, 2)
    assert beam[0].token_ids == [t for t in ids if t != 49407] and beam[0].score == pytest.approx(score, abs=1e-4)
