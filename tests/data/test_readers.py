"""Readers on small fixtures in the official file formats (tests/fixtures/annotations), with missing videos."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from videococa.data import (AnnotationError, read_activitynet_captions, read_activitynet_qa, read_charades,
                            read_hmdb51, read_ivqa, read_kinetics, read_msrvtt, read_msrvtt_1ka, read_msrvtt_qa,
                            read_msvd, read_msvd_qa, read_ucf101, read_vatex, read_youcook2)
from videococa.data.registry import DatasetRequestError, load_datasets
from videococa.tasks import load_labels

A = Path(__file__).resolve().parent.parent / "fixtures" / "annotations"


@pytest.fixture
def root(tmp_path, easy_videos):
    """A video root; `put(rel)` places a real (short) video at root/rel."""
    r = tmp_path / "videos"
    r.mkdir()

    def put(*rels):
        for rel in rels:
            (r / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(easy_videos[0], r / rel)
        return r

    return put


def test_kinetics_csv_with_the_bundled_classes(root):
    videos = root("validate/abseiling/0wR5jVB-WPk_000417_000427.mp4", "validate/zumba/3caPS4FHFF8_000030_000040.mp4")
    ds = read_kinetics(A / "kinetics400_val.csv", videos, classes=load_labels("kinetics400").labels)
    assert [i.video_id for i in ds.items] == ["0wR5jVB-WPk_000417_000427", "3caPS4FHFF8_000030_000040"]
    assert [i.labels for i in ds.items] == [[0], [399]] and ds.missing == ["--nQbRBEz2s_000104_000114"]
    assert ds.items[0].path.endswith("validate/abseiling/0wR5jVB-WPk_000417_000427.mp4")
    assert read_kinetics(A / "kinetics400_val.csv", videos).classes == ["abseiling", "air drumming", "zumba"]


def test_ucf101_split(root):
    videos = root("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "Archery/v_Archery_g01_c01.avi")
    ds = read_ucf101(A / "classInd.txt", A / "testlist01.txt", videos)
    assert ds.name == "ucf101-split1" and ds.classes == ["ApplyEyeMakeup", "ApplyLipstick", "Archery"]
    assert [i.labels for i in ds.items] == [[0], [2]] and ds.missing == ["ApplyLipstick/v_ApplyLipstick_g01_c01.avi"]


def test_hmdb51_keeps_test_items_only(root):
    videos = root("brush_hair/Austin_Powers_Ill_Brush_Hair_brush_hair_h_cm_np1_fr_goo_0.avi")
    ds = read_hmdb51([A / "brush_hair_test_split1.txt", A / "cartwheel_test_split1.txt"], videos)
    assert ds.name == "hmdb51-split1" and ds.classes == ["brush_hair", "cartwheel"]
    assert [i.labels for i in ds.items] == [[0]] and ds.missing == ["Catch_Me_If_You_Can_cartwheel_f_cm_np1_le_med_0.avi"]
    with pytest.raises(AnnotationError, match="not named like an HMDB51 split file"):
        read_hmdb51([A / "classInd.txt"], videos)


def test_charades_multi_label(root):
    videos = root("YSKX3.mp4", "ZZZZZ.mp4")
    ds = read_charades(A / "Charades_v1_test.csv", A / "Charades_v1_classes.txt", videos)
    assert ds.multi_label and ds.classes == ["c000", "c001", "c002"]
    assert [(i.video_id, i.labels) for i in ds.items] == [("YSKX3", [0, 1]), ("ZZZZZ", [])]
    assert ds.missing == ["0KZ7W"]


def test_msrvtt_full_and_1ka(root):
    videos = root("video7010.mp4", "video7011.mp4")
    ds = read_msrvtt(A / "test_videodatainfo.json", videos)
    assert [(i.video_id, len(i.captions)) for i in ds.items] == [("video7010", 2), ("video7011", 1)]
    assert ds.missing == ["video7012"]
    ka = read_msrvtt_1ka(A / "MSRVTT_JSFUSION_test.csv", videos)
    assert [i.captions for i in ka.items] == [["a man is talking about a car"], ["a cartoon character is dancing"]]
    with pytest.raises(AnnotationError, match="no videos in split 'train'"):
        read_msrvtt(A / "test_videodatainfo.json", videos, split="train")


def test_msvd_vatex_activitynet_youcook2(root):
    videos = root("-4wsuPCjDBc_5_15.avi", "Ptf_2VRj-V0_000122_000132.mp4", "v_QOlSCBRmfWY.mkv", "113/GLd3aX16zBg.webm")
    msvd = read_msvd(A / "AllVideoDescriptions.txt", videos)
    assert len(msvd.items[0].captions) == 2 and msvd.missing == ["-7KMZQEsJW4_205_208"]
    vatex = read_vatex(A / "vatex_public_test_english_v1.1.json", videos)
    assert vatex.items[0].captions[0] == "A man is playing a guitar on stage." and vatex.missing == ["missing_000001_000011"]
    para = read_activitynet_captions(A / "activitynet_val_1.json", videos)
    assert para.items[0].captions[0].startswith("A young woman is seen standing in a room. She then begins")
    seg = read_activitynet_captions(A / "activitynet_val_1.json", videos, level="segment")
    assert [(i.start, i.end) for i in seg.items] == [(0.83, 19.86), (17.37, 60.81), (56.26, 79.42)]
    yc = read_youcook2(A / "youcookii_annotations_trainval.json", videos)
    assert [(i.start, i.end, i.captions[0][:6]) for i in yc.items] == [(90, 102, "spread"), (114, 127, "place ")]


def test_msvd_split_errors_name_the_mapping_file_and_the_splits(root, tmp_path):
    videos = root("-4wsuPCjDBc_5_15.avi")
    desc, mapping = A / "AllVideoDescriptions.txt", A / "youtube_mapping.txt"  # vid1 and vid2: both train
    with pytest.raises(AnnotationError) as err:
        read_msvd(desc, videos, split="test")
    assert str(err.value) == (f"{str(desc)!r}: the MSVD test split is given by youtube_mapping.txt (YouTube clip -> "
                              "vidN), which was not given; pass it with the descriptions (--annotations "
                              "AllVideoDescriptions.txt youtube_mapping.txt)")
    with pytest.raises(AnnotationError, match="the MSVD validate split is given by youtube_mapping.txt"):
        load_datasets("caption", "msvd", [desc], videos, "validate")  # asked for: an error, not every clip
    with pytest.raises(DatasetRequestError, match="--split 'val' is not a split of msvd; choose one of: train, "
                                                  "validate, test$"):
        load_datasets("caption", "msvd", [desc, mapping], videos, "val")
    with pytest.raises(ValueError, match="unknown split 'val'; choose one of: train, validate, test$"):
        read_msvd(desc, videos, mapping=mapping, split="val")
    with pytest.raises(AnnotationError, match="has no videos in split 'test'; the splits it has: train$"):
        load_datasets("retrieve", "msvd", [desc, mapping], videos)  # eval's default, test
    train = read_msvd(desc, videos, mapping=mapping, split="train")
    assert (train.name, [i.video_id for i in train.items], train.missing) == (
        "msvd-train", ["-4wsuPCjDBc_5_15"], ["-7KMZQEsJW4_205_208"])
    (tmp_path / "other_mapping.txt").write_text("-4wsuPCjDBc_5_15 vid1\n")
    with pytest.raises(AnnotationError, match="1 clip\\(s\\) of .* are not in .*other_mapping.txt' \\(first: "
                                              "'-7KMZQEsJW4_205_208'\\), so their split is unknown"):
        read_msvd(desc, videos, mapping=tmp_path / "other_mapping.txt", split="train")
    (tmp_path / "bad_mapping.txt").write_text("-4wsuPCjDBc_5_15 1\n")
    with pytest.raises(AnnotationError, match="line 1: '-4wsuPCjDBc_5_15 1' is not 'YOUTUBE_CLIP vidN'"):
        read_msvd(desc, videos, mapping=tmp_path / "bad_mapping.txt")


def test_qa_readers(root):
    videos = root("video7010.mp4", "-4wsuPCjDBc_5_15.mp4", "v_QOlSCBRmfWY.mp4", "5ZZKs2X3GSA_14_24.mp4")
    m = read_msrvtt_qa(A / "msrvtt_qa_test.json", videos)
    assert [(i.video_id, i.question, i.answers) for i in m.items] == [("video7010", "what is a man talking about?", ["car"])]
    assert m.missing == ["video7011"]
    v = read_msvd_qa(A / "msvd_qa_test.json", videos, mapping=A / "youtube_mapping.txt")
    assert [i.video_id for i in v.items] == ["-4wsuPCjDBc_5_15"] and v.missing == ["-7KMZQEsJW4_205_208"]
    a = read_activitynet_qa(A / "activitynet_test_q.json", A / "activitynet_test_a.json", videos)
    assert a.items[0].answers == ["dancing"]
    iv = read_ivqa(A / "ivqa_test.csv", videos)
    assert iv.items[0].answers == ["onion", "onion", "onions", "onion", "garlic"]


def test_bad_annotation_files(tmp_path):
    (tmp_path / "v").mkdir()
    with pytest.raises(AnnotationError, match="does not exist"):
        read_msrvtt(tmp_path / "nope.json", tmp_path / "v")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(AnnotationError, match="not valid JSON"):
        read_msrvtt(tmp_path / "bad.json", tmp_path / "v")
    (tmp_path / "k.csv").write_text("youtube_id,time_start\nabc,1\n")
    with pytest.raises(AnnotationError, match="lacks column"):
        read_kinetics(tmp_path / "k.csv", tmp_path / "v")
    with pytest.raises(AnnotationError, match="is not a directory"):
        read_msrvtt(A / "test_videodatainfo.json", tmp_path / "nowhere")
