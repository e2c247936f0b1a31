"""The CLI under a hostile user: odd files, hostile names, bad numbers, full disks, damaged indexes, Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from videococa.cli import main

CLI = [sys.executable, "-m", "videococa"]


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def library(tmp_path, easy_videos):
    lib = tmp_path / "lib"
    lib.mkdir()
    for p in easy_videos[:2]:
        shutil.copy2(p, lib / Path(p).name)
    return lib


def test_a_fifo_in_the_library_is_skipped_not_opened(library, tmp_path):
    os.mkfifo(library / "pipe.mp4")
    proc = subprocess.run([*CLI, "index", str(library), "--index", str(tmp_path / "idx"), "--json"],
                          capture_output=True, text=True, timeout=300)  # before the fix: blocked forever in open()
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["added"] == 2
    assert "note: " in proc.stderr and "pipe.mp4" in proc.stderr and "FIFO (named pipe)" in proc.stderr


@pytest.mark.parametrize("make,message", [
    (lambda p: os.mkfifo(p), "is a FIFO (named pipe), not a regular file"),
    (lambda p: os.symlink(p, p), "symbolic link loop"),
    (lambda p: os.symlink(p.with_name("gone.mp4"), p), "broken symbolic link"),
])
def test_odd_inputs_named_on_purpose_fail_with_the_reason(capsys, easy_videos, tmp_path, make, message):
    odd = tmp_path / "odd.mp4"
    make(odd)
    code, out, err = run(capsys, "classify", odd, easy_videos[0], "--labels", "ucf101", "--top-k", "1", "--json")
    assert code == 1 and f"skipped {odd}: '{odd}': {message}" in err and "Traceback" not in err
    assert [json.loads(l)["video"] for l in out.splitlines()] == [easy_videos[0]]  # the rest is done


def test_hostile_names_are_escaped_on_a_terminal_and_lossless_in_json(capsys, monkeypatch, library, tmp_path):
    evil = os.fsencode(library) + b"/\x1b]0;pwned\x07\x1b[31mred\nline-\xff.mp4"
    shutil.copy2(library / "red_circle.mp4", evil)
    code, out, err = run(capsys, "index", library, "--index", tmp_path / "idx", "--frames", "4")
    assert code == 0 and json.loads(out)["added"] == 3 and "Traceback" not in err
    code, out, _ = run(capsys, "search", tmp_path / "idx", "a red circle", "--top-k", "3")  # piped: JSON lines
    paths = [os.fsencode(json.loads(l)["path"]) for l in out.splitlines()]
    assert evil in paths  # json.loads gives back exactly the name on disk
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, _ = run(capsys, "search", tmp_path / "idx", "a red circle", "--top-k", "3")
    lines = out.splitlines()
    assert len(lines) == 4 and "\x1b" not in out and "\x07" not in out  # a header and 3 rows, nothing raw
    assert any("\\x1b]0;pwned\\x07\\x1b[31mred\\nline-\\xff.mp4" in line for line in lines)


@pytest.mark.parametrize("argv,message", [
    (["index", "{v}", "--index", "{tmp}/idx", "--segment", "inf"], "argument --segment: expected a segment length"),
    (["index", "{v}", "--index", "{tmp}/idx", "--segment", "nan"], "got 'nan'"),
    (["index", "{v}", "--index", "{tmp}/idx", "--segment", "1e-300"], "at least 0.1 and at most 86400"),
    (["classify", "{v}", "--labels", "ucf101", "--batch-size", "4096", "--frames", "64"],
     "--batch-size 4096 x --frames 64 holds 262144 frames in memory at once; at most 4096"),
    (["embed", "{v}", "--out", "{tmp}/e.parquet", "--frames", "100000"], "expected a number of frames"),
    (["classify", "{v}", "--labels", "ucf101", "--workers", "-1"], "expected a number of reading threads from 0"),
    (["classify", "{v}", "--labels", "ucf101", "--batch-size", "1e9"], "expected a batch size from 1 to 4096"),
    (["finetune", "--task", "qa", "--dataset", "synthetic", "--train", "x", "--features", "f", "--out", "o",
      "--lr", "inf"], "expected a learning rate above 0"),
])
def test_bad_numbers_are_refused_before_anything_is_written(capsys, easy_videos, tmp_path, argv, message):
    argv = [a.replace("{v}", easy_videos[0]).replace("{tmp}", str(tmp_path)) for a in argv]
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "idx").exists() and not (tmp_path / "e.parquet").exists()


def test_label_files_must_be_small_regular_files(capsys, easy_videos, tmp_path):
    code, _, err = run(capsys, "classify", easy_videos[0], "--labels", "/dev/zero")
    assert code == 2 and "label file '/dev/zero' is a character device, not a regular file" in err
    big = tmp_path / "big.txt"
    with big.open("wb") as f:
        f.truncate(17 << 20)  # sparse: no disk used
    code, _, err = run(capsys, "classify", easy_videos[0], "--labels", big)
    assert code == 2 and "is larger than 16 MiB" in err


def test_messages_stay_short(capsys, easy_videos):
    code, _, err = run(capsys, "caption", easy_videos[0], "--prompt", "word " * 2000, "--method", "greedy")
    assert code == 2 and "(10000 characters)" in err and len(err) < 400


def test_output_to_a_full_disk_is_one_sentence(easy_videos, tmp_path):
    with open("/dev/full", "w") as full:
        proc = subprocess.run([*CLI, "classify", easy_videos[0], "--labels", "ucf101", "--json"], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=300)
    assert proc.returncode == 1 and "cannot write the output: No space left on device" in proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr


def test_damaged_or_empty_index_records_through_the_cli(capsys, library, tmp_path):
    idx = tmp_path / "idx"
    assert run(capsys, "index", library, "--index", idx)[0] == 0
    for f in idx.glob("index.sqlite*"):
        f.unlink()
    (idx / "index.sqlite").write_bytes(b"")
    for argv in (["search", idx, "a red circle"], ["index", library, "--index", idx]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and "is empty (0 bytes)" in err and f"videococa index --repair --index {idx}" in err
        assert "Traceback" not in err
    code, out, err = run(capsys, "index", library, "--index", idx, "--repair")
    assert code == 0 and json.loads(out)["added"] == 2 and "repaired" in err and "starts empty" in err
    code, out, err = run(capsys, "index", "--index", idx)
    assert code == 2 and "give the video directories or files to index (or --repair)" in err


def test_ctrl_c_ends_a_main_thread_stuck_in_c_code(tmp_path):
    """The main thread sits in one long C call that releases the GIL; Python cannot run its handler until it
    returns, so the watchdog ends the process (exit 130) before the call could finish."""
    script = textwrap.dedent("""
        import hashlib, sys, threading, time
        from videococa import interrupt
        data = b"x" * (3 << 30)  # one sha256 call over 3 GiB: seconds in C with the GIL released
        main = threading.main_thread()

        def announce():  # once the main thread has been on the hashing line for a while, it is inside the call
            while sys._current_frames()[main.ident].f_lineno != LINE:
                time.sleep(0.01)
            time.sleep(0.2)
            print("ready", flush=True)

        with interrupt.catching_sigint():
            LINE = sys._getframe().f_lineno + 2
            threading.Thread(target=announce, daemon=True).start()
            hashlib.sha256(data).digest()
            print("finished the C call", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "VIDEOCOCA_SIGINT_GRACE": "1"})  # the shipped default
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err and "finished the C call" not in out
