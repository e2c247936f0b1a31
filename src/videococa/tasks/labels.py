"""Label sets and prompt templates: the bundled benchmark ones and user files.

A label file has one class per line. Blank lines and lines starting with `#` are skipped. A line
`official<TAB>prompt name` keeps the dataset's own class name (what predictions and evaluation
report) apart from the words put into the prompt. Charades' official `c000 Holding some clothes`
lines are read as id + prompt name. A Kinetics annotation csv (`label,youtube_id,...`) is read as
the sorted set of its labels.

A template file has one template per line, each with exactly one `{}` for the class name.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

from ..errors import LabelSetError
from ..paths import display, regular_file_problem, shorten

MAX_LABEL_FILE_BYTES = 16 << 20
"""Largest label or template file read (16 MiB; Kinetics-700's class list is 11 kB)."""


def _read_small_text(path: Path, what: str) -> str:
    """The text of a label/template file: a regular file of at most MAX_LABEL_FILE_BYTES, UTF-8."""
    problem = regular_file_problem(path)
    if problem is not None:
        raise LabelSetError(f"{what} {display(path)!r}" + (f" {problem}" if problem.startswith("is ") else f": {problem}"))
    with path.open("rb") as f:
        data = f.read(MAX_LABEL_FILE_BYTES + 1)
    if len(data) > MAX_LABEL_FILE_BYTES:
        raise LabelSetError(f"{what} {display(path)!r} is larger than {MAX_LABEL_FILE_BYTES >> 20} MiB; "
                            "a label or template file holds one short line per class")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LabelSetError(f"{what} {display(path)!r} is not UTF-8 text ({exc.reason})") from None

BUNDLED_LABELS: dict[str, tuple[str, str, bool]] = {
    # name: (label file, default templates, multi-label)
    "kinetics400": ("kinetics400.txt", "kinetics", False),
    "kinetics600": ("kinetics600.txt", "kinetics", False),
    "kinetics700": ("kinetics700.txt", "kinetics", False),  # mmaction2's copy of the official list
    "ucf101": ("ucf101.txt", "ucf101", False),
    "hmdb51": ("hmdb51.txt", "kinetics", False),
    "charades": ("charades.txt", "kinetics", True),
}
"""Bundled label sets. HMDB51 and Charades have no published CLIP templates; they use the Kinetics ones."""


BUNDLED_TEMPLATES = ("kinetics", "ucf101", "single", "clip")
"""`clip`: the CLIP templates that belong to the label set (kinetics for files)."""

_CHARADES_LINE = re.compile(r"^(c\d{3})\s+(\S.*)$")


@dataclass(frozen=True)
class LabelSet:
    """Classes to classify into, with the words that go into prompts."""

    name: str
    """Bundled name or the file it came from."""
    labels: tuple[str, ...]
    """Class names as the dataset writes them; predictions report these."""
    prompt_names: tuple[str, ...]
    """The words substituted into templates, aligned with `labels`."""
    default_templates: str = "kinetics"
    """Template set used when `templates="clip"`."""
    multi_label: bool = False
    """Whether a video may carry several of these classes (Charades)."""

    def __len__(self) -> int:
        return len(self.labels)


def _data(name: str) -> str:
    return resources.files("videococa.tasks").joinpath("labelsets", name).read_text(encoding="utf-8")


def _lines(text: str) -> list[tuple[int, str]]:
    return [(i, s.strip()) for i, s in enumerate(text.splitlines(), 1) if s.strip() and not s.strip().startswith("#")]


def _parse_label_lines(text: str, source: str) -> tuple[list[str], list[str]]:
    rows = _lines(text)
    if not rows:
        raise LabelSetError(f"label file {source!r} is empty: it needs one class name per line")
    labels, prompts = [], []
    for _, line in rows:
        if "\t" in line:
            official, prompt = (p.strip() for p in line.split("\t", 1))
        elif m := _CHARADES_LINE.match(line):
            official, prompt = m.group(1), m.group(2).strip()
        else:
            official = prompt = line
        if not official or not prompt:
            raise LabelSetError(f"label file {source!r}: line {shorten(line)!r} has an empty name")
        labels.append(official)
        prompts.append(prompt)
    first: dict[str, int] = {}
    for (lineno, _), label in zip(rows, labels):
        if label in first:
            raise LabelSetError(f"label file {source!r} names {shorten(label)!r} twice (lines {first[label]} and {lineno}); "
                                "each class must appear once")
        first[label] = lineno
    return labels, prompts


def _read_kinetics_csv(path: Path, text: str) -> list[str]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    labels = sorted({row["label"].strip() for row in reader if row.get("label", "").strip()})
    if not labels:
        raise LabelSetError(f"label file {str(path)!r} is a csv with a 'label' column but no labels in it")
    return labels


def load_labels(spec: str | os.PathLike | Sequence[str]) -> LabelSet:
    """A bundled label set by name, a label file, or a list of class names."""
    if not isinstance(spec, (str, os.PathLike)):
        names = [str(s).strip() for s in spec]
        labels, prompts = _parse_label_lines("\n".join(names), "the given list")
        if len(labels) != len(names):
            raise LabelSetError("the given list of class names contains empty names")
        return LabelSet("list", tuple(labels), tuple(prompts))
    text = str(spec)
    if text in BUNDLED_LABELS:
        file, templates, multi = BUNDLED_LABELS[text]
        labels, prompts = _parse_label_lines(_data(file), text)
        return LabelSet(text, tuple(labels), tuple(prompts), templates, multi)
    path = Path(text)
    if not path.exists():
        known = ", ".join(BUNDLED_LABELS)
        raise LabelSetError(f"labels {text!r}: no such file, and not a bundled label set (bundled: {known})")
    if path.is_dir():
        raise LabelSetError(f"labels {text!r} is a directory; give a text file with one class name per line")
    try:
        content = _read_small_text(path, "label file")
    except OSError as exc:
        raise LabelSetError(f"label file {display(text)!r} cannot be read: {exc.strerror or exc}") from None
    if path.suffix.lower() == ".csv" and content.lstrip().lower().startswith("label,"):
        labels = _read_kinetics_csv(path, content)
        return LabelSet(str(path), tuple(labels), tuple(labels))
    labels, prompts = _parse_label_lines(content, str(path))
    return LabelSet(str(path), tuple(labels), tuple(prompts))


def load_templates(spec: str | os.PathLike | Sequence[str], labels: LabelSet | None = None) -> tuple[str, ...]:
    """Prompt templates: `clip` (the label set's own CLIP templates), `kinetics`, `ucf101`, `single`, a file or a list."""
    if not isinstance(spec, (str, os.PathLike)):
        templates, source = [str(t).strip() for t in spec], "the given templates"
    else:
        text = str(spec)
        if text == "clip":
            text = labels.default_templates if labels is not None else "kinetics"
        if text in BUNDLED_TEMPLATES:
            templates, source = [s for _, s in _lines(_data(f"templates_{text}.txt"))], text
        else:
            path = Path(text)
            if not os.path.lexists(path):
                raise LabelSetError(f"templates {display(text)!r}: no such file, and not a bundled template set "
                                    f"(bundled: {', '.join(BUNDLED_TEMPLATES)})")
            try:
                templates, source = [s for _, s in _lines(_read_small_text(path, "template file"))], text
            except OSError as exc:
                raise LabelSetError(f"template file {display(text)!r} cannot be read: {exc.strerror or exc}") from None
    if not templates:
        raise LabelSetError(f"templates {source!r}: no templates (one per line, each with one {{}})")
    for t in templates:
        if t.count("{}") != 1:
            raise LabelSetError(f"templates {source!r}: {shorten(t)!r} must contain exactly one {{}} where the class name goes")
    if len(set(templates)) != len(templates):
        raise LabelSetError(f"templates {source!r}: a template is repeated")
    return tuple(templates)


def label_set_names() -> list[str]:
    """Names accepted by load_labels (bundled ones)."""
    return list(BUNDLED_LABELS)
