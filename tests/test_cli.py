"""Tier 4: the `videococa` command, through main(argv) and as a real subprocess, with good and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from videococa.cli import build_parser, main
from videococa.testing import EASY_VIDEOS


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, [json.loads(l) for l in out.splitlines() if l.strip()], err


@pytest.fixture(scope="module")
def labels_file(tmp_path_factory):
    f = tmp_path_factory.mktemp("labels") / "easy.txt"
    f.write_text("".join(f"{c} {s}\n" for s, c, _ in EASY_VIDEOS))
    return str(f)


@pytest.mark.parametrize("command", ["models", "classify", "index", "search", "caption", "ask", "embed", "demo"])
def test_every_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert f"example:\n  videococa {command}" in capsys.readouterr().out


def test_classify_easy_videos_and_a_corrupt_one_in_the_batch(capsys, easy_videos, labels_file, tmp_path):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 500)
    code, rows, err = run(capsys, "classify", easy_videos[0], str(bad), *easy_videos[1:], "--labels", labels_file,
                          "--templates", "single", "--top-k", "2", "--frames", "4")
    assert code == 1
    assert [r["video"] for r in rows] == easy_videos
    assert [r["predictions"][0]["label"] for r in rows] == [f"{c} {s}" for s, c, _ in EASY_VIDEOS]
    assert all(len(r["predictions"]) == 2 for r in rows)
    assert f"skipped {bad}" in err and "Traceback" not in err


def test_keyframes_sampling_reports_the_frame_times_used(capsys, easy_videos, labels_file):
    from videococa import read_video

    code, rows, _ = run(capsys, "classify", easy_videos[0], "--labels", labels_file, "--templates", "single",
                        "--top-k", "1", "--frames", "4", "--sampling", "keyframes")
    clip = read_video(easy_videos[0], 4, sampling="keyframes")
    assert code == 0 and rows[0]["frame_times"] == [round(t, 3) for t in clip.timestamps]
    assert rows[0]["predictions"][0]["label"] == "red circle"
    code, rows, _ = run(capsys, "caption", easy_videos[0], "--method", "greedy", "--max-len", "8", "--frames", "4",
                        "--sampling", "keyframes")
    assert code == 0 and rows[0]["frame_times"] == [round(t, 3) for t in clip.timestamps]
    code, rows, _ = run(capsys, "caption", easy_videos[0], "--method", "greedy", "--max-len", "8", "--frames", "4")
    assert code == 0 and "frame_times" not in rows[0]


def test_classify_table_on_a_terminal(capsys, easy_videos, labels_file, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code = main(["classify", easy_videos[2], "--labels", labels_file, "--templates", "single", "--top-k", "2"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and out[0].split() == ["VIDEO", "RANK", "LABEL", "SCORE"]
    assert out[1].startswith(easy_videos[2]) and "green triangle" in out[1] and out[2].split()[0] == "2"


@pytest.mark.parametrize("argv,code,message", [
    (["classify", "{v}", "--labels", "kinetics4000"], 2, "not a bundled label set"),
    (["classify", "{v}", "--labels", "{empty}"], 2, "is empty"),
    (["classify", "{v}", "--labels", "{dup}"], 2, "names 'x' twice"),
    (["classify", "{v}", "--labels", "kinetics400", "--templates", "{empty}"], 2, "no templates"),
    (["classify", "/no/such/video.mp4", "--labels", "kinetics400"], 1, "/no/such/video.mp4': no such file"),
    (["classify", "{v}", "--labels", "kinetics400", "--top-k", "0"], 2, "expected a number of results from 1 to 10000"),
    (["search", "{tmp}/none", "a cat"], 2, "no video index at"),
    (["search", "{tmp}/none"], 2, "give a text QUERY or --video"),
    (["search", "{tmp}/none", "  "], 2, "the search query is empty"),
    (["index", "{v}", "--index", "{empty}/idx"], 2, "cannot create the index"),
    (["ask", "{v}"], 2, "give at least one VIDEO and then the QUESTION"),
    (["embed", "{v}", "--out", "{tmp}/e.csv"], 2, "should end in .parquet"),
    (["caption", "{v}", "--method", "nucleus"], 2, "invalid choice: 'nucleus'"),
    (["embed", "{v}", "--out", "{tmp}/e.parquet", "--sampling", "random"], 2, "invalid choice: 'random'"),
    (["index", "{v}", "--index", "{tmp}/idx", "--sampling", "random"], 2, "invalid choice: 'random'"),
    (["classify", "{v}", "--labels", "kinetics400", "--sampling", "dense"], 2,
     "invalid choice: 'dense' (choose from 'uniform', 'keyframes')"),
])
def test_bad_input_gives_one_clear_message(capsys, easy_videos, tmp_path, argv, code, message):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "dup.txt").write_text("x\ny\nx\n")
    subs = {"{v}": easy_videos[0], "{empty}": str(tmp_path / "empty.txt"), "{dup}": str(tmp_path / "dup.txt"),
            "{tmp}": str(tmp_path)}
    argv = [next((a.replace(k, v) for k, v in subs.items() if k in a), a) for a in argv]
    try:
        got = main(argv)
    except SystemExit as e:  # argparse usage errors
        got = e.code
    err = capsys.readouterr().err
    assert got == code and message in err and "Traceback" not in err


def test_index_search_by_text_and_video_then_reopen(capsys, easy_videos, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    for p in easy_videos:
        os.link(p, lib / Path(p).name)
    idx = str(tmp_path / "idx")
    code, (summary,), _ = run(capsys, "index", str(lib), "--index", idx, "--frames", "4")
    assert code == 0 and (summary["added"], summary["entries"], summary["search"]) == (5, 5, "exact")
    code, (summary,), _ = run(capsys, "index", str(lib), "--index", idx, "--frames", "4")
    assert summary["unchanged"] == 5 and summary["added"] == 0
    code, by_text, _ = run(capsys, "search", idx, "a yellow star", "--top-k", "3")
    assert code == 0 and [h["rank"] for h in by_text] == [1, 2, 3] and by_text[0]["path"].endswith("yellow_star.mp4")
    assert by_text[0]["score"] > by_text[1]["score"] and (by_text[0]["start"], by_text[0]["end"]) == (0.0, 2.0)
    code, by_video, _ = run(capsys, "search", idx, "--video", easy_videos[3], "--top-k", "1")
    assert code == 0 and by_video[0]["path"].endswith("yellow_star.mp4") and by_video[0]["score"] > 0.999
    code, again, _ = run(capsys, "search", idx, "a yellow star", "--top-k", "3")  # the index opened anew
    assert code == 0 and again == by_text  # same files, ranks, times and scores


def test_caption_ask_and_embed(capsys, easy_videos, tmp_path):
    code, rows, _ = run(capsys, "caption", *easy_videos[:2], "--method", "greedy", "--max-len", "12")
    assert code == 0 and [r["video"] for r in rows] == easy_videos[:2]
    assert "red" in rows[0]["caption"].split() and "blue" in rows[1]["caption"].split()
    code, rows, _ = run(capsys, "ask", *easy_videos[:2], "what colour is the square?")
    assert code == 0 and [r["question"] for r in rows] == ["what colour is the square?"] * 2
    assert rows[1]["answer"] == "blue"
    code, (summary,), _ = run(capsys, "embed", *easy_videos[:2], "--out", str(tmp_path / "e.parquet"), "--segment", "1")
    assert code == 0 and (summary["rows"], summary["videos"]) == (4, 2)


def test_subprocess_pipes_json_and_exit_codes(easy_videos, labels_file):
    cmd = [sys.executable, "-m", "videococa", "classify", easy_videos[4], "/missing.mp4", "--labels", labels_file,
           "--templates", "single", "--top-k", "1", "--frames", "4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    (row,) = [json.loads(l) for l in proc.stdout.splitlines()]  # piped: JSON lines, no progress bar
    assert row["predictions"][0]["label"] == "purple hexagon"
    assert "skipped /missing.mp4" in proc.stderr and "Traceback" not in proc.stderr and "\r" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "videococa", "classify"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "the following arguments are required" in proc.stderr


def test_parser_defaults():
    args = build_parser().parse_args(["classify", "a.mp4", "--labels", "ucf101"])
    assert (args.num_frames, args.templates, args.top_k, args.batch_size, args.precision) == (8, "clip", 5, 4, "auto")


def test_retrieve_and_retrieval_are_one_task_name_everywhere():
    parse = build_parser().parse_args
    for word in ("retrieve", "retrieval"):
        assert parse(["eval", word, "--dataset", "msrvtt-1ka", "--annotations", "a.csv"]).task == "retrieve"
        assert parse(["cache-features", "a.csv", "--dataset", "msrvtt", "--out", "f", "--task", word]).task == "retrieve"
        assert parse(["finetune", "--task", word, "--dataset", "msrvtt", "--train", "t.json", "--features", "f",
                      "--out", "o"]).task == "retrieval"
