"""Tier 1: label sets and templates, bundled and from files, and every way a file can be wrong."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from videococa import LabelSetError, load_labels
from videococa.tasks import load_templates


@pytest.mark.parametrize("name,size", [("kinetics400", 400), ("kinetics600", 600), ("kinetics700", 700), ("ucf101", 101),
                                       ("hmdb51", 51), ("charades", 157)])
def test_bundled_label_sets_have_the_official_sizes_and_no_duplicates(name, size):
    labels = load_labels(name)
    assert len(labels) == size == len(set(labels.labels)) == len(labels.prompt_names)
    assert all(p.strip() == p and p for p in labels.prompt_names)


def test_bundled_names_and_prompt_names():
    k400 = load_labels("kinetics400")
    assert k400.labels[:3] == ("abseiling", "air drumming", "answering questions") and k400.labels[-1] == "zumba"
    ucf = load_labels("ucf101")
    assert ucf.labels[0] == "ApplyEyeMakeup" and ucf.prompt_names[0] == "Apply Eye Makeup"
    assert ucf.labels[100] == "YoYo" and ucf.prompt_names[36] == "Hand Stand Pushups"  # CLIP's own wording
    hmdb = load_labels("hmdb51")
    assert ("brush_hair", "brush hair") == (hmdb.labels[0], hmdb.prompt_names[0])
    ch = load_labels("charades")
    assert ch.multi_label and ch.labels[0] == "c000" and ch.prompt_names[0] == "Holding some clothes"
    assert ch.labels[156] == "c156" and ch.prompt_names[156] == "Someone is eating something"


def test_clip_templates_follow_the_label_set():
    kin = load_templates("clip", load_labels("kinetics400"))
    ucf = load_templates("clip", load_labels("ucf101"))
    assert len(kin) == 28 and kin[0] == "a photo of {}." and kin[-1] == "a demonstration of a person practicing {}."
    assert len(ucf) == 48 and ucf[0] == "a photo of a person {}." and ucf[-1] == "a demonstration of the person practicing {}."
    assert load_templates("single") == ("a video of {}.",)


SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "annotations"


@pytest.mark.skipif(not (SHARED / "kinetics").is_dir(), reason="the real annotation files (../shared/annotations) "
                    "are not next to this checkout")
@pytest.mark.parametrize("name,file", [("kinetics400", "label_map_k400.txt"), ("kinetics600", "label_map_k600.txt"),
                                       ("kinetics700", "label_map_k700.txt")])
def test_bundled_kinetics_lists_are_the_published_ones(name, file):
    published = (SHARED / "kinetics" / file).read_text(encoding="utf-8").splitlines()
    labels = load_labels(name)
    assert list(labels.labels) == published and len(published) == int(name[-3:])
    assert labels.default_templates == "kinetics"  # CLIP's 28 Kinetics templates, as for 400 and 600


def test_kinetics700_is_bundled_with_clips_kinetics_templates():
    k700 = load_labels("kinetics700")
    assert k700.labels[:2] == ("abseiling", "acting in play") and k700.labels[-1] == "zumba"
    assert len(load_templates("clip", k700)) == 28


def test_label_file_formats(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("# my classes\n\nred circle\nBlueSquare\tblue square\n  green star  \n")
    labels = load_labels(f)
    assert labels.labels == ("red circle", "BlueSquare", "green star")
    assert labels.prompt_names == ("red circle", "blue square", "green star")
    ch = tmp_path / "Charades_v1_classes.txt"
    ch.write_text("c000 Holding some clothes\nc001 Putting clothes somewhere\n")
    assert load_labels(ch).labels == ("c000", "c001") and load_labels(ch).prompt_names[1] == "Putting clothes somewhere"
    csv = tmp_path / "validate.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\nzumba,abc,0,10,validate\n"
                   "abseiling,def,5,15,validate\nzumba,ghi,1,11,validate\n")
    assert load_labels(csv).labels == ("abseiling", "zumba")
    assert load_labels(["a cat", "a dog"]).labels == ("a cat", "a dog")


@pytest.mark.parametrize("text,message", [
    ("", "is empty"),
    ("# only a comment\n\n", "is empty"),
    ("cat\ndog\ncat\n", "names 'cat' twice (lines 1 and 3)"),
])
def test_bad_label_files_are_named_with_the_problem(tmp_path, text, message):
    f = tmp_path / "bad.txt"
    f.write_text(text)
    with pytest.raises(LabelSetError, match=re.escape(message)) as e:
        load_labels(f)
    assert str(f) in str(e.value)


def test_unknown_label_set_lists_the_bundled_ones(tmp_path):
    with pytest.raises(LabelSetError, match="kinetics4000.*not a bundled label set.*kinetics400, kinetics600, kinetics700, ucf101"):
        load_labels("kinetics4000")
    with pytest.raises(LabelSetError, match="is a directory"):
        load_labels(tmp_path)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(LabelSetError, match="not UTF-8"):
        load_labels(bad)


def test_bad_templates(tmp_path):
    with pytest.raises(LabelSetError, match="exactly one"):
        load_templates(["a video of something."])
    with pytest.raises(LabelSetError, match="exactly one"):
        load_templates(["{} and {}"])
    with pytest.raises(LabelSetError, match="repeated"):
        load_templates(["a {}.", "a {}."])
    with pytest.raises(LabelSetError, match="not a bundled template set"):
        load_templates("imagenet")
    f = tmp_path / "t.txt"
    f.write_text("# mine\na clip of {}.\n")
    assert load_templates(f) == ("a clip of {}.",)
