"""Ctrl-C whose KeyboardInterrupt lands in a finaliser (and is dropped by Python) still stops a run."""

from __future__ import annotations

import signal
import sqlite3

import pytest

from videococa import VideoLoader, interrupt
from videococa.cli import main
from videococa.testing import sample_video


class _Finaliser:
    """Presses Ctrl-C while being collected: Python prints and drops the KeyboardInterrupt raised in __del__."""

    def __del__(self):
        signal.raise_signal(signal.SIGINT)


def test_check_is_silent_outside_the_cli():
    with interrupt.catching_sigint():
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # an ordinary Ctrl-C is still an ordinary KeyboardInterrupt
        assert interrupt.requested()
    with interrupt.catching_sigint():  # each run starts afresh
        assert not interrupt.requested()
        interrupt.check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored on the way out


@pytest.mark.parametrize("workers", [0, 2])
def test_a_swallowed_ctrl_c_stops_the_loader_at_its_next_batch(workers, capsys):
    paths = [sample_video("bikes.mp4")] * 4
    with interrupt.catching_sigint():
        batches = iter(VideoLoader(paths, num_frames=2, batch_size=1, workers=workers, prefetch=1))
        next(batches)
        _Finaliser()  # no exception here: Python swallowed it
        assert interrupt.requested()
        with pytest.raises(KeyboardInterrupt):
            next(batches)
    assert "Traceback" not in capsys.readouterr().err  # the dropped exception is not printed either


def test_cli_index_exits_130_after_a_swallowed_ctrl_c(easy_videos, tmp_path, monkeypatch, capsys):
    from videococa.video import loader

    read_one, calls = loader._read_one, []

    def read_then_ctrl_c(path, kwargs):  # Ctrl-C lands in a finaliser while the 2nd file is read
        calls.append(path)
        if len(calls) == 2:
            _Finaliser()
        return read_one(path, kwargs)

    monkeypatch.setattr(loader, "_read_one", read_then_ctrl_c)
    idx = tmp_path / "idx"
    code = main(["index", *easy_videos, "--index", str(idx), "--batch-size", "1", "--workers", "0", "--json"])
    err = capsys.readouterr().err
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    assert len(calls) == 2  # stopped before reading a 3rd file
    files = sqlite3.connect(idx / "index.sqlite").execute("SELECT path FROM files").fetchall()
    # the 2nd file was read whole before the run noticed the Ctrl-C, so it is committed too; no 3rd is started
    assert sorted(f for (f,) in files) == sorted(easy_videos[:2])
