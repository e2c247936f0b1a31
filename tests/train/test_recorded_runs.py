"""Finetuning runs give exactly the losses and weights recorded before the issue-20 refactor of train/finetune.py.

RECORDED was produced by the code at commit 1760661 (before `RunDir`, the train_one_epoch / validate split and the
shared differentiable pooling) by running this file with VIDEOCOCA_RECORD=1 on the development machine (CPU,
torch 2.14.1, one thread), which prints the dict. Tolerance 0: a refactor must not change a bit. Floating-point
results can differ on another CPU or torch build; re-record there from that commit if this test is to guard it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_file

import videococa
from videococa.train import FinetuneConfig, finetune
from videococa.text import qa_text

finetune_mod = importlib.import_module("videococa.train.finetune")  # the module (the package exports the function)

CAPTIONS = ["a red circle moving left", "a blue square moving up", "a green star moving right",
            "a red square moving down", "a blue circle moving left", "a green circle moving up"]
KEYS = [f"/clip{i}.mp4||" for i in range(len(CAPTIONS))]
RUNS = {  # name -> config; every --temporal variant and every --task, with accumulation, text tower, bf16, resume
    "caption-none": dict(task="caption", temporal="none"),
    "caption-embedding-acc2": dict(task="caption", temporal="embedding", accumulate=2, epochs=3),
    "caption-transformer-eval": dict(task="caption", temporal="transformer", temporal_layers=2),
    "qa-none": dict(task="qa", temporal="none"),
    "retrieval-embedding-text": dict(task="retrieval", temporal="embedding", train_text=True),
    "retrieval+caption-transformer-bf16-resumed": dict(task="retrieval+caption", temporal="transformer", bf16=True),
}


class _MemoryCache:
    """The part of FeatureCache that finetune uses, over seeded random fp16 tokens (B, T=2, N, W)."""

    def __init__(self, model):
        size = model.info.image_size
        n, w = model.encode_frames(torch.zeros(1, 1, 3, size, size)).shape[2:]
        g = torch.Generator().manual_seed(0)
        self.tokens = {k: torch.randn(2, n, w, generator=g).half() for k in KEYS}  # (T, N, W) each
        self.path = "memory"
        self.manifest = {"fingerprint": model.fingerprint()}

    def __contains__(self, key: str) -> bool:
        return key in self.tokens

    def get(self, key: str) -> torch.Tensor:
        return self.tokens[key]


class _Scalars:
    """Stands in for TensorBoard's SummaryWriter: keeps the unrounded scalars finetune logs."""

    def __init__(self):
        self.rows: list = []

    def add_scalar(self, tag, value, step):
        self.rows.append([tag, step, float(value)])

    def close(self):
        pass


def _pairs(task: str) -> list[tuple[str, str]]:
    if task == "qa":
        return [(k, qa_text('what colour is it?', c.split()[1]))
                for k, c in zip(KEYS, CAPTIONS)]
    return list(zip(KEYS, CAPTIONS))


def _run(name: str, tmp_path, monkeypatch) -> dict:
    settings = dict(RUNS[name])
    cfg = FinetuneConfig(**{"epochs": 2, "batch_size": 3, "lr": 1e-3, "warmup": 2, **settings})
    model = videococa.load_model("videococa-tiny")
    cache = _MemoryCache(model)
    pairs = _pairs(cfg.task)
    feats = torch.stack([cache.get(k) for k in KEYS])
    evaluate = None
    if name.endswith("-eval"):  # validation through the inference pooling path, recorded in run.json's history
        def evaluate(m):
            emb, gen = m.pool_frame_tokens(feats)
            return {"emb": float(emb.double().sum()), "gen": float(gen.double().abs().sum())}
    scalars = _Scalars()
    monkeypatch.setattr(finetune_mod, "_tensorboard", lambda run: scalars)
    run = tmp_path / name
    if name.endswith("-resumed"):  # interrupted after 1 step, then resumed by a fresh model
        finetune(model, cache, pairs, run, cfg, max_steps=1)
        model = videococa.load_model("videococa-tiny")
    info = finetune(model, cache, pairs, run, cfg, evaluate=evaluate)
    trained = load_file(str(run / "trained.safetensors"))
    digest = hashlib.sha256()
    for k in sorted(trained):
        digest.update(k.encode() + trained[k].numpy().tobytes())
    info.pop("seconds_this_session")
    return {"scalars": scalars.rows, "weights_sha256": digest.hexdigest(),
            "weights_sum": sum(float(t.double().sum()) for t in trained.values()),
            "run_json": json.loads(json.dumps(info))}


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(RUNS))
def test_runs_match_the_values_recorded_before_the_refactor(name, tmp_path, monkeypatch, one_thread):
    got = _run(name, tmp_path, monkeypatch)
    if os.environ.get("VIDEOCOCA_RECORD"):
        print(f"RECORD {name!r}: {got!r},")
        return
    want = RECORDED[name]
    _leave_out_options_added_since(got, want)
    if os.environ.get("VIDEOCOCA_EXACT"):  # on the recording machine and software: bit for bit
        assert got == want
        return
    # Elsewhere (an AVX2-only CPU instead of the AMX Xeon that recorded them, another torch build) float
    # kernels round differently: every number must still agree closely, bf16 within its 8-bit mantissa.
    rel = 3e-2 if "bf16" in name else 1e-4
    assert _close(got["scalars"], want["scalars"], rel)  # every step's loss, contrastive, caption, lr, logit_scale
    assert _close(got["weights_sum"], want["weights_sum"], rel)
    assert _close(got["run_json"], want["run_json"], rel)


def _leave_out_options_added_since(got: dict, want: dict) -> None:
    """Finetune options added after the recording (temporal_scaled, temporal_lr, ...) must sit at their defaults,
    which leave training as it was; then run.json's config is compared without them."""
    config, recorded = got["run_json"]["config"], want["run_json"]["config"]
    defaults = asdict(FinetuneConfig())
    added = {k: config.pop(k) for k in list(config) if k not in recorded}
    assert added == {k: defaults[k] for k in added}


def _close(a, b, rel: float) -> bool:
    """Equal structures whose numbers agree within `rel` (relative, with a floor for values near zero)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= rel * max(abs(a), abs(b), 1e-3)
    return a == b


BASE = {"model": "videococa-tiny", "pretrained": "bundled", "precision": "fp32", "fingerprint": "1bd73d2d3561e1f2",
        "videococa": videococa.__version__, "sampling": "uniform"}
"""run.json's `base`: the model's provenance(). Recorded before as model, pretrained and fingerprint only; the
other fields came with provenance() and change no number (the version is the installed one's)."""

RECORDED: dict = {  # printed by VIDEOCOCA_RECORD=1 at commit 1760661 (see the module docstring); base: BASE
 'caption-none': {'scalars': [['train/loss', 1, 8.535633087158203],
                              ['train/contrastive', 1, 0.0],
                              ['train/caption', 1, 8.535633087158203],
                              ['train/lr', 1, 0.0005],
                              ['train/logit_scale', 1, 23.945520401000977],
                              ['train/loss', 2, 7.508556842803955],
                              ['train/contrastive', 2, 0.0],
                              ['train/caption', 2, 7.508556842803955],
                              ['train/lr', 2, 0.001],
                              ['train/logit_scale', 2, 23.945520401000977],
                              ['train/loss', 3, 6.093822002410889],
                              ['train/contrastive', 3, 0.0],
                              ['train/caption', 3, 6.093822002410889],
                              ['train/lr', 3, 0.001],
                              ['train/logit_scale', 3, 23.945520401000977],
                              ['train/loss', 4, 5.044397354125977],
                              ['train/contrastive', 4, 0.0],
                              ['train/caption', 4, 5.044397354125977],
                              ['train/lr', 4, 0.0005],
                              ['train/logit_scale', 4, 23.945520401000977]],
                  'weights_sha256': 'fa96de84df149b5f711579b05317855b6f70ed493468155091c59ae5ca5ebe72',
                  'weights_sum': 2176.945083161454,
                  'run_json': {'base': BASE,
                               'config': {'task': 'caption',
                                          'epochs': 2,
                                          'batch_size': 3,
                                          'accumulate': 1,
                                          'lr': 0.001,
                                          'weight_decay': 0.05,
                                          'warmup': 2,
                                          'clip': 1.0,
                                          'bf16': False,
                                          'temporal': 'none',
                                          'temporal_layers': 1,
                                          'contrastive_weight': None,
                                          'caption_weight': None,
                                          'train_text': False,
                                          'seed': 0,
                                          'extra': {}},
                               'step': 4,
                               'history': [],
                               'train_pairs': 6,
                               'missing_from_cache': 0,
                               'processes': 1}},
 'caption-embedding-acc2': {'scalars': [['train/loss', 1, 8.344175338745117],
                                        ['train/contrastive', 1, 0.0],
                                        ['train/caption', 1, 8.344175338745117],
                                        ['train/lr', 1, 0.0005],
                                        ['train/logit_scale', 1, 23.945520401000977],
                                        ['train/loss', 2, 7.279397010803223],
                                        ['train/contrastive', 2, 0.0],
                                        ['train/caption', 2, 7.279397010803223],
                                        ['train/lr', 2, 0.001],
                                        ['train/logit_scale', 2, 23.945520401000977],
                                        ['train/loss', 3, 5.671603202819824],
                                        ['train/contrastive', 3, 0.0],
                                        ['train/caption', 3, 5.671603202819824],
                                        ['train/lr', 3, 0.001],
                                        ['train/logit_scale', 3, 23.945520401000977]],
                            'weights_sha256': '3fac1d3e28175c07cb55836bb0c80056161abdaf03d93cbc0c9abefb3bdc765f',
                            'weights_sum': 2181.735385021477,
                            'run_json': {'base': BASE,
                                         'config': {'task': 'caption',
                                                    'epochs': 3,
                                                    'batch_size': 3,
                                                    'accumulate': 2,
                                                    'lr': 0.001,
                                                    'weight_decay': 0.05,
                                                    'warmup': 2,
                                                    'clip': 1.0,
                                                    'bf16': False,
                                                    'temporal': 'embedding',
                                                    'temporal_layers': 1,
                                                    'contrastive_weight': None,
                                                    'caption_weight': None,
                                                    'train_text': False,
                                                    'seed': 0,
                                                    'extra': {}},
                                         'step': 3,
                                         'history': [],
                                         'train_pairs': 6,
                                         'missing_from_cache': 0,
                                         'processes': 1}},
 'caption-transformer-eval': {'scalars': [['train/loss', 1, 8.535633087158203],
                                          ['train/contrastive', 1, 0.0],
                                          ['train/caption', 1, 8.535633087158203],
                                          ['train/lr', 1, 0.0005],
                                          ['train/logit_scale', 1, 23.945520401000977],
                                          ['train/loss', 2, 7.9403204917907715],
                                          ['train/contrastive', 2, 0.0],
                                          ['train/caption', 2, 7.9403204917907715],
                                          ['train/lr', 2, 0.001],
                                          ['train/logit_scale', 2, 23.945520401000977],
                                          ['val/emb', 2, -8.810312108631479],
                                          ['val/gen', 2, 155630.8150171105],
                                          ['train/loss', 3, 5.914942264556885],
                                          ['train/contrastive', 3, 0.0],
                                          ['train/caption', 3, 5.914942264556885],
                                          ['train/lr', 3, 0.001],
                                          ['train/logit_scale', 3, 23.945520401000977],
                                          ['train/loss', 4, 4.976328372955322],
                                          ['train/contrastive', 4, 0.0],
                                          ['train/caption', 4, 4.976328372955322],
                                          ['train/lr', 4, 0.0005],
                                          ['train/logit_scale', 4, 23.945520401000977],
                                          ['val/emb', 4, -8.331986784309265],
                                          ['val/gen', 4, 154928.30208877625]],
                              'weights_sha256': '3ff09792b3068c2338744087bb93fa8334bc578bc8d527e77ada608949903283',
                              'weights_sum': 5847.086460160147,
                              'run_json': {'base': BASE,
                                           'config': {'task': 'caption',
                                                      'epochs': 2,
                                                      'batch_size': 3,
                                                      'accumulate': 1,
                                                      'lr': 0.001,
                                                      'weight_decay': 0.05,
                                                      'warmup': 2,
                                                      'clip': 1.0,
                                                      'bf16': False,
                                                      'temporal': 'transformer',
                                                      'temporal_layers': 2,
                                                      'contrastive_weight': None,
                                                      'caption_weight': None,
                                                      'train_text': False,
                                                      'seed': 0,
                                                      'extra': {}},
                                           'step': 4,
                                           'history': [{'epoch': 1,
                                                        'step': 2,
                                                        'emb': -8.810312108631479,
                                                        'gen': 155630.8150171105},
                                                       {'epoch': 2,
                                                        'step': 4,
                                                        'emb': -8.331986784309265,
                                                        'gen': 154928.30208877625}],
                                           'train_pairs': 6,
                                           'missing_from_cache': 0,
                                           'processes': 1}},
 'qa-none': {'scalars': [['train/loss', 1, 3.3710384368896484],
                         ['train/contrastive', 1, 0.0],
                         ['train/caption', 1, 3.3710384368896484],
                         ['train/lr', 1, 0.0005],
                         ['train/logit_scale', 1, 23.945520401000977],
                         ['train/loss', 2, 2.466089963912964],
                         ['train/contrastive', 2, 0.0],
                         ['train/caption', 2, 2.466089963912964],
                         ['train/lr', 2, 0.001],
                         ['train/logit_scale', 2, 23.945520401000977],
                         ['train/loss', 3, 1.8143630027770996],
                         ['train/contrastive', 3, 0.0],
                         ['train/caption', 3, 1.8143630027770996],
                         ['train/lr', 3, 0.001],
                         ['train/logit_scale', 3, 23.945520401000977],
                         ['train/loss', 4, 1.590132236480713],
                         ['train/contrastive', 4, 0.0],
                         ['train/caption', 4, 1.590132236480713],
                         ['train/lr', 4, 0.0005],
                         ['train/logit_scale', 4, 23.945520401000977]],
             'weights_sha256': '41660c68b31c18a53785efec160ffaedbd5b61092034efcf2c4b9c300eb3e022',
             'weights_sum': 2110.4543505867327,
             'run_json': {'base': BASE,
                          'config': {'task': 'qa',
                                     'epochs': 2,
                                     'batch_size': 3,
                                     'accumulate': 1,
                                     'lr': 0.001,
                                     'weight_decay': 0.05,
                                     'warmup': 2,
                                     'clip': 1.0,
                                     'bf16': False,
                                     'temporal': 'none',
                                     'temporal_layers': 1,
                                     'contrastive_weight': None,
                                     'caption_weight': None,
                                     'train_text': False,
                                     'seed': 0,
                                     'extra': {}},
                          'step': 4,
                          'history': [],
                          'train_pairs': 6,
                          'missing_from_cache': 0,
                          'processes': 1}},
 'retrieval-embedding-text': {'scalars': [['train/loss', 1, 3.1002461910247803],
                                          ['train/contrastive', 1, 3.1002461910247803],
                                          ['train/caption', 1, 0.0],
                                          ['train/lr', 1, 0.0005],
                                          ['train/logit_scale', 1, 23.933551788330078],
                                          ['train/loss', 2, 3.4765784740448],
                                          ['train/contrastive', 2, 3.4765784740448],
                                          ['train/caption', 2, 0.0],
                                          ['train/lr', 2, 0.001],
                                          ['train/logit_scale', 2, 23.909648895263672],
                                          ['train/loss', 3, 2.6284255981445312],
                                          ['train/contrastive', 3, 2.6284255981445312],
                                          ['train/caption', 3, 0.0],
                                          ['train/lr', 3, 0.001],
                                          ['train/logit_scale', 3, 23.88619041442871],
                                          ['train/loss', 4, 2.600928783416748],
                                          ['train/contrastive', 4, 2.600928783416748],
                                          ['train/caption', 4, 0.0],
                                          ['train/lr', 4, 0.0005],
                                          ['train/logit_scale', 4, 23.874370574951172]],
                              'weights_sha256': 'e3bab9c219884669c79c5fc1f43dc54639990d804aeba458483807a5c5963ae7',
                              'weights_sum': 2986.752839684857,
                              'run_json': {'base': BASE,
                                           'config': {'task': 'retrieval',
                                                      'epochs': 2,
                                                      'batch_size': 3,
                                                      'accumulate': 1,
                                                      'lr': 0.001,
                                                      'weight_decay': 0.05,
                                                      'warmup': 2,
                                                      'clip': 1.0,
                                                      'bf16': False,
                                                      'temporal': 'embedding',
                                                      'temporal_layers': 1,
                                                      'contrastive_weight': None,
                                                      'caption_weight': None,
                                                      'train_text': True,
                                                      'seed': 0,
                                                      'extra': {}},
                                           'step': 4,
                                           'history': [],
                                           'train_pairs': 6,
                                           'missing_from_cache': 0,
                                           'processes': 1}},
 'retrieval+caption-transformer-bf16-resumed': {'scalars': [['train/loss', 1, 20.194180727005005],
                                                            ['train/contrastive', 1, 3.1200459003448486],
                                                            ['train/caption', 1, 8.537067413330078],
                                                            ['train/lr', 1, 0.0005],
                                                            ['train/logit_scale', 1, 23.933551788330078],
                                                            ['train/loss', 2, 19.117948532104492],
                                                            ['train/contrastive', 2, 3.897067070007324],
                                                            ['train/caption', 2, 7.610440731048584],
                                                            ['train/lr', 2, 0.001],
                                                            ['train/logit_scale', 2, 23.9107666015625],
                                                            ['train/loss', 3, 14.916851043701172],
                                                            ['train/contrastive', 3, 1.5238876342773438],
                                                            ['train/caption', 3, 6.696481704711914],
                                                            ['train/lr', 3, 0.001],
                                                            ['train/logit_scale', 3, 23.889795303344727],
                                                            ['train/loss', 4, 14.99232006072998],
                                                            ['train/contrastive', 4, 3.870086669921875],
                                                            ['train/caption', 4, 5.561116695404053],
                                                            ['train/lr', 4, 0.0005],
                                                            ['train/logit_scale', 4, 23.879671096801758]],
                                                'weights_sha256': 'df88075a469051a1861c56f5137479e237dc9e49579cbe9180bfbf8a7f77aa0a',
                                                'weights_sum': 5544.069218602607,
                                                'run_json': {'base': BASE,
                                                             'config': {'task': 'retrieval+caption',
                                                                        'epochs': 2,
                                                                        'batch_size': 3,
                                                                        'accumulate': 1,
                                                                        'lr': 0.001,
                                                                        'weight_decay': 0.05,
                                                                        'warmup': 2,
                                                                        'clip': 1.0,
                                                                        'bf16': True,
                                                                        'temporal': 'transformer',
                                                                        'temporal_layers': 1,
                                                                        'contrastive_weight': None,
                                                                        'caption_weight': None,
                                                                        'train_text': False,
                                                                        'seed': 0,
                                                                        'extra': {}},
                                                             'step': 4,
                                                             'history': [],
                                                             'train_pairs': 6,
                                                             'missing_from_cache': 0,
                                                             'processes': 1}}}
