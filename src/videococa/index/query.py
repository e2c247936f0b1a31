"""What a search may return and how rankings combine: filters as SQL, caption text as FTS5, rank fusion.

Pure functions over SQL text and id lists, so `VideoIndex` stays about storage and each rule here is
tested on hand-built inputs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

from ..errors import OptionError

GroupBy = Literal["moment", "video"]
GROUP_BYS: tuple[str, ...] = ("moment", "video")
RRF_K = 60
"""Reciprocal rank fusion constant (Cormack, Clarke & Buettcher, SIGIR 2009: 1 / (60 + rank))."""


@dataclass(frozen=True)
class SearchFilter:
    """Conditions on the file of an entry; a search returns only entries whose file meets all that are given."""

    path_prefix: str | None = None
    """The file's absolute path starts with this text (e.g. '/videos/holidays/')."""
    path_glob: str | None = None
    """The file's absolute path matches this SQLite GLOB pattern (`*` and `?` also match '/'; case-sensitive)."""
    min_duration: float | None = None
    """Seconds; files at least this long."""
    max_duration: float | None = None
    """Seconds; files at most this long."""
    modified_after: float | None = None
    """Unix time; files last modified at or after it."""
    modified_before: float | None = None
    """Unix time; files last modified at or before it."""
    exclude_videos: frozenset[int] = frozenset()
    """Ids of files never to return (e.g. a server's files that lie outside its library)."""

    def __post_init__(self) -> None:
        for name in ("min_duration", "max_duration", "modified_after", "modified_before"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise OptionError(f"{name} must be a finite number, got {v!r}")
        for lo, hi in (("min_duration", "max_duration"), ("modified_after", "modified_before")):
            a, b = getattr(self, lo), getattr(self, hi)
            if a is not None and b is not None and a > b:
                raise OptionError(f"{lo} ({a}) is greater than {hi} ({b}): no file can match")
        for name in ("path_prefix", "path_glob"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v or "\x00" in v):
                raise OptionError(f"{name} must be a non-empty string without NUL characters, got {v!r}")

    @property
    def empty(self) -> bool:
        return not self.exclude_videos and all(getattr(self, k) is None for k in self.__dataclass_fields__
                                               if k != "exclude_videos")

    def sql(self, files: str = "f") -> tuple[str, list]:
        """(condition, parameters) over the files table aliased `files`; '1' when nothing is asked."""
        parts: list[str] = []
        args: list = []
        if self.path_prefix is not None:
            parts.append(f"substr({files}.path, 1, ?) = ?")
            args += [len(self.path_prefix), self.path_prefix]
        if self.path_glob is not None:
            parts.append(f"{files}.path GLOB ?")
            args.append(self.path_glob)
        for name, op, col, scale in (("min_duration", ">=", "duration", 1), ("max_duration", "<=", "duration", 1),
                                     ("modified_after", ">=", "mtime_ns", 10**9),
                                     ("modified_before", "<=", "mtime_ns", 10**9)):
            v = getattr(self, name)
            if v is not None:
                parts.append(f"{files}.{col} {op} ?")
                args.append(int(v * scale) if scale != 1 else float(v))
        if self.exclude_videos:  # integers written into the SQL text: no limit on bound variables
            parts.append(f"{files}.id NOT IN ({','.join(str(int(i)) for i in sorted(self.exclude_videos))})")
        return (" AND ".join(parts) or "1"), args


def check_group_by(group_by: str) -> None:
    if group_by not in GROUP_BYS:
        raise OptionError(f"unknown group_by {group_by!r}; choose one of: {', '.join(GROUP_BYS)}")


_WORD = re.compile(r"\w+", re.UNICODE)


def fts_query(text: str) -> str | None:
    """An FTS5 MATCH expression for free text: its words, each quoted (no operators a user could trip on), any of
    them matching (bm25 ranks entries with more and rarer words first); None when the text has no words."""
    words = _WORD.findall(text.lower())
    if not words:
        return None
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(words))


def rrf(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: (id, fused score) by descending score; ties keep the first ranking's order."""
    score: dict[int, float] = {}
    first: dict[int, tuple[int, int]] = {}
    for r, ranking in enumerate(rankings):
        for pos, i in enumerate(ranking):
            score[i] = score.get(i, 0.0) + 1.0 / (k + pos + 1)
            first.setdefault(i, (r, pos))
    return sorted(score.items(), key=lambda kv: (-kv[1], first[kv[0]]))


def page(items: Iterable, offset: int, limit: int) -> list:
    """Items offset .. offset+limit of an iterable, consuming no more of it than needed."""
    out = []
    for n, it in enumerate(items):
        if n >= offset + limit:
            break
        if n >= offset:
            out.append(it)
    return out
