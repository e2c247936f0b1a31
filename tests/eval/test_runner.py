"""`videococa eval`: official formats through the runner, splits, the embedding cache, the synthetic benchmark."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from videococa.cli import main
from videococa.eval import runner
from videococa.data.readers import AnnotationError
from videococa.eval.runner import EvalError, evaluate, evaluate_dataset, load_datasets
from videococa.testing import EASY_VIDEOS


@pytest.fixture
def ucf_like(tmp_path, easy_videos):
    """A UCF101-format split pair whose classes are the easy videos' objects; one listed video is missing."""
    root = tmp_path / "videos"
    names = [f"{c}_{s}" for s, c, _ in EASY_VIDEOS]
    for name, p in zip(names, easy_videos):
        (root / name).mkdir(parents=True)
        os.link(p, root / name / f"v_{name}_g01_c01.avi")
    (tmp_path / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
    (tmp_path / "testlist01.txt").write_text("".join(f"{n}/v_{n}_g01_c01.avi\n" for n in names) +
                                             "red_circle/v_red_circle_g07_c03.avi\n")
    (tmp_path / "testlist02.txt").write_text("".join(f"{n}/v_{n}_g01_c01.avi\n" for n in names[:2]))
    return tmp_path, root


def test_classification_on_an_official_format_with_splits_and_a_missing_video(tiny_model, ucf_like):
    ann, root = ucf_like
    dss = load_datasets("classify", "ucf101", [ann / "classInd.txt", ann / "testlist01.txt", ann / "testlist02.txt"],
                        root)
    out = evaluate(tiny_model, "classify", dss, num_frames=4, templates="single")
    r1, r2 = out["results"]
    assert (r1["protocol"]["dataset"], r1["protocol"]["videos_used"], r1["protocol"]["videos_missing"]) == \
        ("ucf101-split1", 5, 1)
    assert r1["metrics"]["top1"] == 100.0 and r2["metrics"]["top1"] == 100.0
    assert out["mean_over_splits"]["top1"] == 100.0
    assert r1["protocol"]["frames"] == 4 and r1["protocol"]["templates"] == 1
    only2 = load_datasets("classify", "ucf101", [ann / "classInd.txt", ann / "testlist01.txt",
                                                 ann / "testlist02.txt"], root, split="2")
    assert [d.name for d in only2] == ["ucf101-split2"]


def test_retrieval_and_qa_on_msrvtt_formats(tiny_model, tmp_path, easy_videos):
    root = tmp_path / "v"
    root.mkdir()
    for i, p in enumerate(easy_videos):
        os.link(p, root / f"video{7010 + i}.mp4")
    info = {"videos": [{"video_id": f"video{7010 + i}", "split": "test", "id": 7010 + i} for i in range(6)],
            "sentences": [{"caption": f"a {c} {s}", "video_id": f"video{7010 + i}", "sen_id": i}
                          for i, (s, c, _) in enumerate(EASY_VIDEOS)]}
    (tmp_path / "test_videodatainfo.json").write_text(json.dumps(info))
    (ds,) = load_datasets("retrieve", "msrvtt", [tmp_path / "test_videodatainfo.json"], root)
    r = evaluate_dataset(tiny_model, ds, num_frames=4)
    assert ds.missing == ["video7015"] and r["protocol"]["texts"] == 5
    assert r["metrics"]["t2v R@1"] == 100.0 and r["metrics"]["v2t R@1"] == 100.0 and r["metrics"]["t2v MdR"] == 1.0
    qa = [{"answer": c, "id": i, "question": f"what colour is the {s}?", "video_id": 7010 + i}
          for i, (s, c, _) in enumerate(EASY_VIDEOS)]
    (tmp_path / "qa.json").write_text(json.dumps(qa))
    (ds,) = load_datasets("qa", "msrvtt-qa", [tmp_path / "qa.json"], root)
    r = evaluate_dataset(tiny_model, ds, num_frames=4)
    assert r["metrics"]["accuracy"] >= 80.0  # colour questions: the tiny model's strength


def test_embeddings_are_cached_across_runs(tiny_model, ucf_like, monkeypatch):
    ann, root = ucf_like
    (ds,) = load_datasets("classify", "ucf101", [ann / "classInd.txt", ann / "testlist01.txt"], root)
    first = evaluate_dataset(tiny_model, ds, num_frames=2, templates="single")

    def boom(*a, **k):
        raise AssertionError("re-encoded although the embeddings are cached")

    monkeypatch.setattr(tiny_model, "encode_video", boom)
    again = evaluate_dataset(tiny_model, ds, num_frames=2, templates="kinetics")  # other prompts, no re-encoding
    assert again["protocol"]["templates"] == 28 and first["protocol"]["templates"] == 1
    with pytest.raises(AssertionError, match="re-encoded"):
        evaluate_dataset(tiny_model, ds, num_frames=3, templates="single")  # other frames: a new encoding


def test_bad_eval_requests(tmp_path):
    with pytest.raises(EvalError, match="not a classify benchmark; choose one of: kinetics400"):
        load_datasets("classify", "msrvtt", ["x.json"], tmp_path)
    with pytest.raises(EvalError, match="no testlist0N.txt among --annotations"):
        load_datasets("classify", "ucf101", [tmp_path / "classInd.txt"], tmp_path)
    with pytest.raises(EvalError, match="--videos DIR is required"):
        load_datasets("retrieve", "msrvtt", ["x.json"], None)


def test_cli_eval_on_the_synthetic_benchmark_matches_the_synthetic_evaluation(tiny_model, tmp_path, capsys):
    from videococa.synthetic.benchmark import make_benchmark
    from videococa.synthetic.evaluate import evaluate as synthetic_evaluate

    root = make_benchmark(tmp_path / "syn", num_videos=12, seed=3, num_frames=8, size=64)
    code = main(["eval", "classify", "--dataset", "synthetic", "--annotations", str(root / "annotations.json"),
                 "--frames", "4", "--json", "--out", str(tmp_path / "r.json")])
    cli = json.loads(capsys.readouterr().out)["results"][0]
    assert code == 0 and cli["protocol"]["videos_used"] == 12 and cli["protocol"]["pooling"] == "attentional"
    assert json.loads((tmp_path / "r.json").read_text())["results"][0]["metrics"] == cli["metrics"]
    table = synthetic_evaluate(tiny_model, root, num_frames=4, variants=("attentional",))
    assert table["variants"]["attentional"]["classification_top1"] == pytest.approx(cli["metrics"]["top1"] / 100)
    code = main(["eval", "qa", "--dataset", "synthetic", "--annotations", str(root / "annotations.json"),
                 "--frames", "4", "--json"])
    qa = json.loads(capsys.readouterr().out)["results"][0]["metrics"]
    assert table["variants"]["attentional"]["qa_accuracy"] == pytest.approx(qa["accuracy"] / 100)
    assert qa["accuracy[motion]"] == 0.0  # stills cannot teach motion


A = Path(__file__).resolve().parents[1] / "fixtures" / "annotations"


@pytest.mark.parametrize("name,files", [
    ("msrvtt", ["test_videodatainfo.json"]), ("msvd", ["AllVideoDescriptions.txt"]),
    ("vatex", ["vatex_public_test_english_v1.1.json"]), ("activitynet", ["activitynet_val_1.json"]),
    ("activitynet-segments", ["activitynet_val_1.json"]), ("youcook2", ["youcookii_annotations_trainval.json"])])
def test_captioned_datasets_are_read_for_the_task_asked(name, files, tmp_path):
    """Issue #19: MSR-VTT, MSVD, VATEX and ActivityNet Captions were read as retrieval whatever the task."""
    (tmp_path / "v").mkdir()
    for task in ("caption", "retrieve"):
        datasets = load_datasets(task, name, [A / f for f in files], tmp_path / "v")
        assert [d.task for d in datasets] == [task]


def test_eval_caption_on_msrvtt_reports_caption_metrics(tmp_path, easy_videos, capsys):
    """Issue #19: `eval caption --dataset msrvtt` reported retrieval R@K under "task": "caption"."""
    root = tmp_path / "v"
    root.mkdir()
    for i, p in enumerate(easy_videos):
        os.link(p, root / f"video{7010 + i}.mp4")
    info = {"videos": [{"video_id": f"video{7010 + i}", "split": "test"} for i in range(5)] +
            [{"video_id": "video1", "split": "train"}],
            "sentences": [{"caption": f"a {c} {s} moving {d}", "video_id": f"video{7010 + i}"}
                          for i, (s, c, d) in enumerate(EASY_VIDEOS)]}
    (tmp_path / "test_videodatainfo.json").write_text(json.dumps(info))
    code = main(["eval", "caption", "--dataset", "msrvtt", "--annotations", str(tmp_path / "test_videodatainfo.json"),
                 "--videos", str(root), "--frames", "2", "--method", "greedy", "--json"])
    out = json.loads(capsys.readouterr().out)
    (r,) = out["results"]
    assert code == 0 and out["task"] == r["protocol"]["task"] == "caption"
    assert r["protocol"]["dataset"] == "msrvtt-test" and r["protocol"]["items"] == 5
    assert {"CIDEr", "BLEU-4", "ROUGE-L", "METEOR"} <= set(r["metrics"]) and r["metrics"]["CIDEr"] > 0
    assert not any(k.startswith(("t2v", "v2t")) for k in r["metrics"])
    assert len(r["metrics"]["examples"]) == 5


def test_split_requests_are_checked(tmp_path, tiny_model):
    (tmp_path / "v").mkdir()
    info = A / "test_videodatainfo.json"
    with pytest.raises(EvalError, match="--split 'val' is not a split of msrvtt; choose one of: train, validate, test"):
        load_datasets("caption", "msrvtt", [info], tmp_path / "v", "val")
    with pytest.raises(EvalError, match="--split test: each vatex annotation file holds one split"):
        load_datasets("caption", "vatex", [A / "vatex_public_test_english_v1.1.json"], tmp_path / "v", "test")
    with pytest.raises(AnnotationError, match="no videos in split 'train'; the splits it has: test"):
        load_datasets("caption", "msrvtt", [info], tmp_path / "v", "train")
    with pytest.raises(EvalError, match="'nope' is not a known dataset; choose one of: msrvtt-qa"):
        load_datasets("qa", "nope", [info], tmp_path / "v")
    (ds,) = load_datasets("retrieve", "msrvtt", [info], tmp_path / "v")
    with pytest.raises(EvalError, match="msrvtt-test was read for retrieve, not caption"):
        evaluate(tiny_model, "caption", [ds])


def test_moments_refuse_another_clip_encoder(tiny_model, easy_videos):
    """Moment retrieval encodes sliding windows of whole videos itself: an `encode` from a backend is refused, not
    silently ignored; the local encoder is accepted."""
    from videococa.data.readers import Dataset, Item  # noqa: PLC0415 - only this test builds a Dataset by hand
    from videococa.tasks.clipkeys import encode_clip_keys  # noqa: PLC0415 - as above

    ds = Dataset("charades-sta", "moments", [Item("v", easy_videos[0], 0.0, 1.0, captions=["a red circle"])], [])

    def elsewhere(model, keys, **kwargs):
        raise AssertionError("never called")

    with pytest.raises(EvalError, match="moment retrieval runs on the local backend only"):
        evaluate_dataset(tiny_model, ds, num_frames=2, encode=elsewhere)
    assert evaluate_dataset(tiny_model, ds, num_frames=2, encode=encode_clip_keys)["protocol"]["items"] == 1
