"""File names and file trees as users have them: odd names, links, FIFOs, vanished roots.

Ground floor (imports nothing of videococa). One rule for every batch command:
- Only regular files are read. FIFOs, sockets and devices are skipped with a reason (opening a FIFO
  blocks until a writer appears, so it is never opened).
- Symbolic links are followed, to files and to directories. Each real file is taken once (by device
  and inode), under the first name the sorted walk meets; later names of the same file are reported
  as skipped. A directory link that leads back into its own ancestors (a loop) is skipped and reported.
- Names need not be UTF-8: Python keeps undecodable bytes as surrogates; `display` escapes them
  (and control characters) for printing, `to_bytes` / `from_bytes` store them losslessly.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from typing import Callable, Collection, Sequence

_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]}
_CONTROL.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


def display(text: str | os.PathLike) -> str:
    """`text` safe for a terminal: control characters (ANSI escapes, newlines) and undecodable bytes as \\x.. escapes."""
    s = os.fspath(text)
    if isinstance(s, bytes):
        s = os.fsdecode(s)
    s = s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")  # undecodable bytes -> \xNN
    return s.translate(_CONTROL)


def shorten(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters for an error message, saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def is_utf8(path: str) -> bool:
    """True if the name can be stored as UTF-8 text as it is (no undecodable bytes)."""
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def to_db(path: str) -> str | bytes:
    """A path for a SQLite TEXT column: the text, or its raw bytes (a BLOB) when the name is not UTF-8."""
    return path if is_utf8(path) else os.fsencode(path)


def from_db(value: str | bytes) -> str:
    """Inverse of `to_db`."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def file_kind(mode: int) -> str:
    """A plain name for what a non-regular file is."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def stat_problem(path: str | os.PathLike) -> tuple[os.stat_result | None, str | None]:
    """(stat following links, None) for an existing path, or (None, what is wrong: missing, broken link, loop, ...)."""
    p = os.fspath(path)
    try:
        return os.stat(p), None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, "symbolic link loop (the link points back to itself)"
        if exc.errno == errno.ENOENT and os.path.islink(p):
            try:
                target = os.readlink(p)
            except OSError:
                target = "?"
            return None, f"broken symbolic link (points to {display(target)!r}, which does not exist)"
        if exc.errno == errno.ENOENT:
            return None, "no such file or directory"
        if exc.errno == errno.EACCES:
            return None, "permission denied"
        return None, exc.strerror or str(exc)


def regular_file_problem(path: str | os.PathLike) -> str | None:
    """None for a regular file (links followed); else what it is instead, in plain words. Never opens the file."""
    st, problem = stat_problem(path)
    if problem is not None:
        return problem
    if not stat.S_ISREG(st.st_mode):
        return f"is {file_kind(st.st_mode)}, not a regular file"
    return None


@dataclass
class Scan:
    """The files found under a list of inputs."""

    paths: list[str] = field(default_factory=list)
    """Regular files to read, each real file once, in input order (directories sorted)."""
    missing: list[tuple[str, str]] = field(default_factory=list)
    """(input, reason) for inputs that do not exist or cannot be listed."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(path, reason) for entries left out on purpose: FIFOs, devices, second names of a file, link loops."""
    empty_dirs: list[str] = field(default_factory=list)
    """Directory inputs that hold no matching file."""
    roots: list[str] = field(default_factory=list)
    """Directory inputs that exist and hold matching files."""


def scan(inputs: Sequence[str | os.PathLike], suffixes: Collection[str],
         prefer: Callable[[str], bool] | None = None) -> Scan:
    """Expand files and directories (recursively, following links) into regular files whose suffix is in `suffixes`.

    Files given by name are taken whatever their suffix. See the module docstring for the rules. When a file
    has several names, the first in walk order is kept, unless `prefer(name)` is true for a later one only
    (the index prefers the name it already knows, so a new link never makes a file count twice).
    Folders below a root that cannot be listed, and entries that cannot be looked at, go to `missing`.
    """
    out = Scan()
    seen: dict[tuple[int, int], str] = {}

    def take(path: str, st: os.stat_result) -> None:
        if not stat.S_ISREG(st.st_mode):
            out.skipped.append((path, f"is {file_kind(st.st_mode)}, not a regular file"))
            return
        key = (st.st_dev, st.st_ino)
        first = seen.get(key)
        if first is None:
            seen[key] = path
            out.paths.append(path)
        elif first != path:
            if prefer is not None and prefer(path) and not prefer(first):
                seen[key] = path
                out.paths[out.paths.index(first)] = path
                path, first = first, path
            out.skipped.append((path, f"same file as {display(first)!r} (a link or another name of it)"))

    for item in inputs:
        p = os.fspath(item)
        st, problem = stat_problem(p)
        if problem is not None:
            out.missing.append((p, problem))
            continue
        if not stat.S_ISDIR(st.st_mode):
            if stat.S_ISREG(st.st_mode):
                take(p, st)
            else:  # named on purpose, so not a silent skip
                out.missing.append((p, f"is {file_kind(st.st_mode)}, not a regular file"))
            continue
        before = len(out.paths) + len(out.skipped)
        _walk(p, st, suffixes, take, out, ancestors=set())
        (out.empty_dirs if len(out.paths) + len(out.skipped) == before else out.roots).append(p)
    return out


def _walk(top: str, top_st: os.stat_result, suffixes, take, out: Scan, ancestors: set) -> None:
    """Depth-first, sorted, links followed; `ancestors` holds the (dev, ino) of the directories above (loop check)."""
    key = (top_st.st_dev, top_st.st_ino)
    ancestors = ancestors | {key}
    try:
        with os.scandir(top) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        out.missing.append((top, f"cannot list the directory: {exc.strerror or exc}"))
        return
    for e in entries:
        path = os.path.join(top, e.name)
        st, problem = stat_problem(path)
        if problem is not None:
            if "loop" in problem or problem.startswith("broken symbolic link"):
                if "loop" in problem or os.path.splitext(e.name)[1].lower() in suffixes:
                    out.skipped.append((path, problem))
            elif problem != "no such file or directory":  # unreadable, I/O error, dead network mount: not "gone"
                out.missing.append((path, problem))
            continue
        if stat.S_ISDIR(st.st_mode):
            if (st.st_dev, st.st_ino) in ancestors:
                out.skipped.append((path, "symbolic link loop (leads back to a directory above it)"))
                continue
            _walk(path, st, suffixes, take, out, ancestors)
        elif os.path.splitext(e.name)[1].lower() in suffixes:
            take(path, st)
