"""Moment retrieval on the synthetic world: objects on screen at known times, found by their description."""

from __future__ import annotations

import json

import pytest

from videococa.cli import main
from videococa.data.readers import AnnotationError
from videococa.eval.runner import evaluate, load_datasets
from videococa.synthetic.benchmark import write_mp4
from videococa.synthetic.world import Obj, Scene, render

FPS, SECONDS = 8, 8
MOMENTS = [  # video -> objects with the seconds they are on screen (a plain grey background otherwise)
    ("m0", [("circle", "red", 2.0, 4.0), ("square", "blue", 5.0, 7.0)]),
    ("m1", [("triangle", "green", 0.0, 2.0), ("star", "yellow", 4.0, 6.0)]),
    ("m2", [("hexagon", "purple", 3.0, 5.0)]),
]


@pytest.fixture(scope="module")
def charades_sta_like(tmp_path_factory):
    """Three 8-second 64-px videos and a charades_sta_test.txt-format file with one query per object."""
    root = tmp_path_factory.mktemp("moments")
    (root / "videos").mkdir()
    lines = []
    for name, objs in MOMENTS:
        frames = []
        for k in range(FPS * SECONDS):
            t = (k + 0.5) / FPS
            shown = [Obj(s, c, "large", 0.5, 0.5) for s, c, a, b in objs if a <= t < b]
            frames.append(render(Scene(shown, "plain", (128, 128, 128)), 64))
        write_mp4(root / "videos" / f"{name}.mp4", frames, fps=FPS)
        lines += [f"{name} {a:.1f} {b:.1f}##a {c} {s}." for s, c, a, b in objs]
    lines.append("gone 1.0 2.0##a video that is not under --videos.")
    (root / "charades_sta_test.txt").write_text("\n".join(lines) + "\n")
    return root


def test_moments_are_found_at_their_times(tiny_model, charades_sta_like):
    (ds,) = load_datasets("moments", "charades-sta", [charades_sta_like / "charades_sta_test.txt"],
                          charades_sta_like / "videos")
    assert (ds.task, len(ds.items), ds.missing) == ("moments", 5, ["gone"])
    (r,) = evaluate(tiny_model, "moments", [ds], num_frames=4)["results"]
    assert r["protocol"]["task"] == "moments" and r["protocol"]["videos_used"] == 3
    assert r["protocol"]["unit_windows"] == 3 * 15  # 1 s units every 0.5 s over 8 s
    # every 2-second moment is the top span exactly (the units inside it score high, those outside low)
    assert r["metrics"] == {"R@1 IoU=0.5": 100.0, "R@5 IoU=0.5": 100.0, "R@1 IoU=0.7": 100.0,
                            "R@5 IoU=0.7": 100.0, "mIoU": 100.0}


def test_cli_eval_moments(charades_sta_like, capsys):
    code = main(["eval", "moments", "--dataset", "charades-sta", "--annotations",
                 str(charades_sta_like / "charades_sta_test.txt"), "--videos", str(charades_sta_like / "videos"),
                 "--frames", "4", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["task"] == "moments" and out["results"][0]["metrics"]["mIoU"] == 100.0
    code = main(["eval", "caption", "--dataset", "charades-sta", "--annotations",
                 str(charades_sta_like / "charades_sta_test.txt"), "--videos", str(charades_sta_like / "videos")])
    err = capsys.readouterr().err
    assert code == 2 and "'charades-sta' is not a caption benchmark; choose one of: msrvtt" in err
    assert "Traceback" not in err


def test_bad_charades_sta_lines(tmp_path):
    (tmp_path / "v").mkdir()
    for text, problem in [("3MSZA 24.3##person turns a light on.", "line 1"),
                          ("3MSZA 30.4 24.3##backwards", "END after START"),
                          ("3MSZA 1.0 2.0 no sentence", "line 1")]:
        (tmp_path / "sta.txt").write_text(text + "\n")
        with pytest.raises(AnnotationError, match=problem) as e:
            load_datasets("moments", "charades-sta", [tmp_path / "sta.txt"], tmp_path / "v")
        assert "sta.txt" in str(e.value) and "VIDEO START END##sentence" in str(e.value)
