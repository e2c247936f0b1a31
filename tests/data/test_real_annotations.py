"""The readers and the dataset registry on the real benchmark annotation files (../shared/annotations, read in
place), checked against the published counts. Videos are empty stand-in files named as the downloads name
them: the readers only look files up by name, so every listed video must be found and none left missing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import torch

from videococa.cli import main
from videococa.data import load_datasets, read_msrvtt
from videococa.data.readers import AnnotationError
from videococa.data.registry import DatasetRequestError

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "annotations"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason=f"the real annotation files are not at {SHARED} "
                                "(the shared folder next to this checkout)")


def stand_ins(root: Path, names, ext: str = ".mp4") -> Path:
    """Empty files root/{name}{ext} (names may hold sub-folders); returns root."""
    for name in names:
        f = root / f"{name}{ext}"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.touch()
    return root


def lines(path: Path) -> list[str]:
    return [l.strip() for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]


def only(datasets):
    (ds,) = datasets
    assert ds.missing == []
    return ds


def test_ucf101_split1_has_3783_test_videos_in_101_classes(tmp_path):
    u = SHARED / "ucf101"
    every = [l.split()[0][: -len(".avi")] for f in ("trainlist01.txt", "testlist01.txt") for l in lines(u / f)]
    root = stand_ins(tmp_path, every, ".avi")  # all 13320 videos in their class folders
    ds = only(load_datasets("classify", "ucf101", [u / "classInd.txt", u / "testlist01.txt"], root))
    assert (ds.name, len(ds.items), len(ds.classes)) == ("ucf101-split1", 3783, 101)
    assert len({it.labels[0] for it in ds.items}) == 101
    folds = load_datasets("classify", "ucf101", [u / "classInd.txt", *sorted(u.glob("testlist0*.txt"))], root)
    assert [len(d.items) for d in folds] == [3783, 3734, 3696]


def test_hmdb51_split1_has_1530_test_videos_in_51_classes(tmp_path):
    files = sorted((SHARED / "hmdb51" / "testTrainMulti_7030_splits").glob("*_split1.txt"))
    root = stand_ins(tmp_path, [l.split()[0][: -len(".avi")] for f in files for l in lines(f)], ".avi")  # 6766
    ds = only(load_datasets("classify", "hmdb51", files, root))
    assert (ds.name, len(ds.items), len(ds.classes)) == ("hmdb51-split1", 1530, 51)


def test_charades_test_has_1863_videos_and_157_classes(tmp_path):
    c = SHARED / "charades"
    with open(c / "Charades_v1_test.csv", newline="", encoding="utf-8") as f:
        root = stand_ins(tmp_path, [r["id"] for r in csv.DictReader(f)])
    for csv_file in (c / "Charades_v1_test.csv", c / "variant_lf" / "Charades_v1_test.csv"):  # CRLF and LF copies
        ds = only(load_datasets("classify", "charades", [csv_file, c / "Charades_v1_classes.txt"], root))
        assert (len(ds.items), len(ds.classes), ds.multi_label) == (1863, 157, True)


def test_charades_sta_test_has_3720_queries(tmp_path):
    c = SHARED / "charades"
    with open(c / "Charades_v1_test.csv", newline="", encoding="utf-8") as f:
        root = stand_ins(tmp_path, [r["id"] for r in csv.DictReader(f)])
    ds = only(load_datasets("moments", "charades-sta", [c / "charades_sta_test.txt"], root))
    assert (ds.task, len(ds.items), len({it.path for it in ds.items})) == ("moments", 3720, 1334)
    first = ds.items[0]
    assert (first.video_id, first.start, first.end, first.captions) == ("3MSZA", 24.3, 30.4, ["person turn a light on."])


@pytest.fixture(scope="module")
def msrvtt_root(tmp_path_factory):
    return stand_ins(tmp_path_factory.mktemp("msrvtt"), [f"video{i}" for i in range(10000)])  # all 10k videos


def test_msrvtt_test_splits(msrvtt_root):
    m = SHARED / "msrvtt"
    ka = only(load_datasets("retrieve", "msrvtt-1ka", [m / "MSRVTT_JSFUSION_test.csv"], msrvtt_root))
    assert len({it.video_id for it in ka.items}) == 1000 == len(ka.items)
    for task in ("retrieve", "caption"):
        full = only(load_datasets(task, "msrvtt", [m / "test_videodatainfo.json"], msrvtt_root))
        assert (full.name, full.task, len(full.items)) == ("msrvtt-test", task, 2990)
        assert sum(len(it.captions) for it in full.items) == 59800


def test_msrvtt_train_and_validate_splits_of_train_val(msrvtt_root):
    tv = [SHARED / "msrvtt" / "train_val_videodatainfo.json"]
    train = only(load_datasets("caption", "msrvtt", tv, msrvtt_root, purpose="train"))
    val = only(load_datasets("caption", "msrvtt", tv, msrvtt_root, purpose="val"))
    assert (train.name, len(train.items), val.name, len(val.items)) == ("msrvtt-train", 6513, "msrvtt-validate", 497)
    assert len(only(load_datasets("caption", "msrvtt", tv, msrvtt_root, purpose="cache")).items) == 7010
    assert len(only(load_datasets("caption", "msrvtt", tv, msrvtt_root, "validate")).items) == 497
    with pytest.raises(AnnotationError, match="no videos in split 'test'; the splits it has: train, validate"):
        load_datasets("caption", "msrvtt", tv, msrvtt_root)  # eval reads test by default
    test = [SHARED / "msrvtt" / "test_videodatainfo.json"]
    assert only(load_datasets("caption", "msrvtt", test, msrvtt_root, purpose="val")).name == "msrvtt-test"
    with pytest.raises(AnnotationError, match="no videos in split 'train'; the splits it has: test"):
        read_msrvtt(test[0], msrvtt_root, split="train")


def test_msvd_qa_test_has_13157_questions(tmp_path):
    q = SHARED / "msvd_qa"
    root = stand_ins(tmp_path, [l.split()[0] for l in lines(q / "youtube_mapping.txt")], ".avi")  # 1970 clips
    ds = only(load_datasets("qa", "msvd-qa", [q / "test_qa.json", q / "youtube_mapping.txt"], root))
    assert (len(ds.items), ds.answer_agreement) == (13157, 1)


MSVD_MAPPING = SHARED / "msvd" / "youtube_mapping.txt"


@pytest.fixture
def msvd_all(tmp_path):
    """(AllVideoDescriptions.txt naming all 1970 clips of the real youtube_mapping.txt, one caption each saying its
    vidN; a root of empty stand-in clips). The real descriptions file is not in ../shared: only the mapping is."""
    if not MSVD_MAPPING.is_file():
        pytest.skip(f"MSVD's youtube_mapping.txt is not at {MSVD_MAPPING}")
    clips = [l.split() for l in lines(MSVD_MAPPING)]  # [youtube clip, vidN]
    desc = tmp_path / "AllVideoDescriptions.txt"
    desc.write_text("# MSVD descriptions: video caption\n"
                    + "".join(f"{yt} a clip that is {vid}\n" for yt, vid in clips))
    return desc, stand_ins(tmp_path / "videos", [yt for yt, _ in clips], ".avi")


def vid_numbers(items) -> list[int]:
    return sorted(int(it.captions[0].rsplit("vid", 1)[1]) for it in items)


def test_msvd_standard_split_has_1200_100_670_videos(msvd_all):
    desc, root = msvd_all
    files = [desc, MSVD_MAPPING]
    test = only(load_datasets("retrieve", "msvd", files, root))  # eval reads test by default
    train = only(load_datasets("caption", "msvd", files, root, purpose="train"))
    val = only(load_datasets("caption", "msvd", files, root, purpose="val"))
    assert [(d.name, len(d.items), d.protocol) for d in (train, val, test)] == [
        ("msvd-train", 1200, {"split": "train"}), ("msvd-validate", 100, {"split": "validate"}),
        ("msvd-test", 670, {"split": "test"})]
    first_last = [vid_numbers(d.items)[::len(d.items) - 1] for d in (train, val, test)]
    assert first_last == [[1, 1200], [1201, 1300], [1301, 1970]]
    every = only(load_datasets("caption", "msvd", files, root, purpose="cache"))
    assert (every.name, len(every.items)) == ("msvd-all", 1970)
    assert len(only(load_datasets("retrieve", "msvd", files, root, "validate")).items) == 100
    unsplit = only(load_datasets("retrieve", "msvd", [desc], root))  # no mapping file: every clip, said so
    assert (unsplit.name, len(unsplit.items)) == ("msvd", 1970)
    assert unsplit.protocol == {"split": "none applied: youtube_mapping.txt not given, so every clip of "
                                         "AllVideoDescriptions.txt is used"}


def test_eval_retrieve_msvd_reads_the_test_split_by_default(msvd_all, monkeypatch, capsys):
    """The command as a user types it; only video encoding is stood in for (the stand-in clips are empty files)."""
    from videococa.eval import runner

    desc, root = msvd_all
    encoded = []

    def encode_items(model, items, **kw):  # one row per item: MSVD has one item per clip
        encoded.extend(items)
        return torch.randn(len(items), model.info.embed_dim), None, list(range(len(items))), []

    monkeypatch.setattr(runner, "encode_items", encode_items)
    code = main(["eval", "retrieve", "--dataset", "msvd", "--annotations", str(desc), str(MSVD_MAPPING),
                 "--videos", str(root), "--model", "videococa-tiny", "--json"])
    protocol = json.loads(capsys.readouterr().out)["results"][0]["protocol"]
    assert code == 0
    assert {k: protocol[k] for k in ("dataset", "split", "items", "videos_used", "videos_missing", "texts")} == {
        "dataset": "msvd-test", "split": "test", "items": 670, "videos_used": 670, "videos_missing": 0, "texts": 670}
    assert vid_numbers(encoded) == list(range(1301, 1971))


def test_activitynet_qa_test_has_8000_questions(tmp_path):
    a = SHARED / "activitynet_qa"
    root = stand_ins(tmp_path, {"v_" + q["video_name"] for q in json.loads((a / "test_q.json").read_text())})
    ds = only(load_datasets("qa", "activitynet-qa", [a / "test_q.json", a / "test_a.json"], root))
    assert (len(ds.items), len({it.path for it in ds.items})) == (8000, 800)


def test_activitynet_captions_val1_has_4917_videos(tmp_path):
    c = SHARED / "activitynet_captions"
    root = stand_ins(tmp_path, json.loads((c / "val_ids.json").read_text()))  # the 4926 validation videos
    para = only(load_datasets("caption", "activitynet", [c / "val_1.json"], root))
    seg = only(load_datasets("caption", "activitynet-segments", [c / "val_1.json"], root))
    assert (para.task, len(para.items), len(seg.items)) == ("caption", 4917, 17505)


def test_youcook2_validation_has_3492_segments(tmp_path):
    y = SHARED / "youcook2"
    root = stand_ins(tmp_path, lines(y / "val_list.txt") + lines(y / "train_list.txt"))  # recipe/youtube_id
    ann = [y / "youcookii_annotations_trainval.json"]
    val = only(load_datasets("caption", "youcook2", ann, root))  # eval default: validate (test is not public)
    assert (val.name, len(val.items), len({it.path for it in val.items})) == ("youcook2-validate", 3492, 457)
    train = only(load_datasets("caption", "youcook2", ann, root, purpose="train"))
    assert len({it.path for it in train.items}) == 1333
    with pytest.raises(DatasetRequestError, match="'test' is not a split of youcook2; choose one of: train, validate"):
        load_datasets("caption", "youcook2", ann, root, "test")
