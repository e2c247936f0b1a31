"""Ctrl-C that cannot be lost.

Python turns SIGINT into a KeyboardInterrupt wherever the main thread happens to be. When that is
inside a finaliser (`__del__`, a Cython `__dealloc__`, a weakref callback), the exception is
"ignored": printed as a traceback and dropped, and the run would go on to the end and exit 0.
`catching_sigint()` (used by the CLI) also records the request, so the batch loops stop at their
next item (`check()`), the command exits 130, and the dropped exception is not printed.
Outside `catching_sigint()` nothing changes: `check()` never raises there.

Python runs a signal handler only when the main thread is between bytecodes, so a main thread stuck in
C code (a long model call, a blocking system call) would not see Ctrl-C for a long time. Inside
`catching_sigint()` a watchdog thread hears the signal at once (through the wakeup fd); if the main
thread has not started handling it within `GRACE` seconds, the process exits with 130 right there. That
is as safe as kill -9 is for everything videococa writes (SQLite transactions, atomic renames).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

_requested = threading.Event()
GRACE = 1.0
"""Seconds the main thread has to start handling Ctrl-C before the watchdog ends the process
(environment variable VIDEOCOCA_SIGINT_GRACE overrides it; the test suite raises it for in-process runs)."""


def requested() -> bool:
    """True once Ctrl-C was pressed inside the current `catching_sigint()` block."""
    return _requested.is_set()


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed, even when its first KeyboardInterrupt was swallowed."""
    if _requested.is_set():
        raise KeyboardInterrupt


def _on_sigint(signum, frame) -> None:
    _requested.set()
    raise KeyboardInterrupt


def _exit_now() -> None:
    try:
        sys.stderr.write("videococa: interrupted\n")
        sys.stderr.flush()
    finally:
        os._exit(130)


def _watch(fd: int, grace: float) -> None:
    """Watchdog thread: wait for SIGINT on the wakeup pipe; exit hard if the main thread does not react in time.

    A second Ctrl-C ends the process at once, whatever the main thread is doing (cleaning up included).
    """
    presses = 0
    while True:
        try:
            data = os.read(fd, 512)  # blocks; EOF when the block ends and the write end is closed
        except OSError:
            return
        if not data:
            return
        presses += data.count(signal.SIGINT)  # one byte per signal delivered
        if presses >= 2 or (presses == 1 and not _requested.wait(grace)):
            _exit_now()


def _unraisable(hook):
    def quiet(unraisable) -> None:  # a KeyboardInterrupt dropped in a finaliser: check() re-raises it
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            hook(unraisable)

    return quiet


@contextmanager
def catching_sigint() -> Iterator[None]:
    """Within the block, Ctrl-C raises KeyboardInterrupt and is remembered (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested.clear()
    previous, hook = signal.signal(signal.SIGINT, _on_sigint), sys.unraisablehook
    sys.unraisablehook = _unraisable(hook)
    r, w = os.pipe()
    os.set_blocking(w, False)
    old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    grace = float(os.environ.get("VIDEOCOCA_SIGINT_GRACE", GRACE))
    watchdog = threading.Thread(target=_watch, args=(r, grace), name="videococa-sigint", daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # a Ctrl-C now waits until we are done
        try:
            signal.set_wakeup_fd(old_fd)
            signal.signal(signal.SIGINT, previous)
            sys.unraisablehook = hook
            os.close(w)  # the watchdog reads EOF and ends
            watchdog.join(timeout=1)
            if not watchdog.is_alive():
                os.close(r)
            _requested.clear()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
