"""Ctrl-C that cannot be lost.

Python turns SIGINT into a KeyboardInterrupt wherever the main thread happens to be. When that is
inside a finaliser (`__del__`, a Cython `__dealloc__`, a weakref callback), the exception is
"ignored": printed as a traceback and dropped, and the run would go on to the end and exit 0.
`catching_sigint()` (used by the CLI) also records the request, so the batch loops stop at their
next item (`check()`), the command exits 130, and the dropped exception is not printed.
Outside `catching_sigint()` nothing changes: `check()` never raises there.
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

_requested = threading.Event()


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
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = hook
        _requested.clear()
