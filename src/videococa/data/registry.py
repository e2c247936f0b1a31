"""The benchmark registry: one declaration per dataset, read by `videococa eval`, `cache-features`, `finetune`
and the command-line help.

A `DatasetSpec` says what a dataset is called on the command line, which tasks its annotations serve, what
its annotation files are, which splits one file can hold and which of them each command reads by default,
and how to read it. Adding a benchmark means adding one entry to `REGISTRY`; nothing else lists datasets.

Split defaults (files that hold several splits: MSR-VTT's videodatainfo json, YouCook2's trainval json, MSVD's
AllVideoDescriptions.txt with youtube_mapping.txt, whose vidN numbers give the standard split):
`eval` reads test (YouCook2: validate, its test annotations are not public); `finetune --train` reads train;
`finetune --val` reads validate where the file has it, else test (so `--val train_val_videodatainfo.json`
validates on the 497 validate videos and `--val test_videodatainfo.json` on the test split);
`cache-features` reads every split in the files (the cache serves training and validation alike).
`--split` overrides the default; UCF101 and HMDB51 take their fold (1, 2 or 3; default every fold given).
Where the split comes from a second file (MSVD's youtube_mapping.txt, `DatasetSpec.split_file`) and that file is
not given, the defaults fall away: every item is read and the protocol says no split was applied; `--split`
without it is an error naming the file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Mapping, Sequence

from ..errors import AnnotationError, DatasetRequestError, OptionError
from ..tasks.labels import BUNDLED_LABELS, load_labels
from . import readers as R
from .readers import Dataset, Item, SplitChoice

Task = Literal["classify", "retrieve", "caption", "qa", "moments"]
TASKS: tuple[str, ...] = ("classify", "retrieve", "caption", "qa", "moments")
Purpose = Literal["eval", "train", "val", "cache"]
PURPOSES: tuple[str, ...] = ("eval", "train", "val", "cache")
DEFAULT_SPLITS: Mapping[str, SplitChoice] = {"eval": "test", "train": "train", "val": ("validate", "test"),
                                             "cache": None}
"""Which split each use reads from a file that holds several (None: all of them)."""

Reader = Callable[[list[str], "str | None", str, SplitChoice], list[Dataset]]
"""(annotation files, video root, task, split) -> the datasets to use (several: UCF101/HMDB51 folds)."""


@dataclass(frozen=True)
class DatasetSpec:
    """One benchmark as the command line knows it."""

    name: str
    """`--dataset` value."""
    tasks: tuple[str, ...]
    """Tasks its annotations serve (`videococa eval TASK`)."""
    annotations: str
    """What `--annotations` must hold, in words (help text and errors)."""
    read: Reader
    """Reads the annotation files for a task and split."""
    splits: tuple[str, ...] = ()
    """Values `--split` may take; empty when every annotation file holds one split."""
    split_defaults: Mapping[str, SplitChoice] = field(default_factory=lambda: dict(DEFAULT_SPLITS))
    """The split read by each use (eval, train, val, cache) when `--split` is not given."""
    needs_videos: bool = True
    """Whether `--videos` is required (the synthetic benchmark's annotations name their files)."""
    split_file: str = ""
    """Where a second annotation file gives the splits: a pattern its name matches (MSVD: youtube_mapping.txt).
    Without that file the split defaults fall away (every item is read); an explicit `--split` still asks for it."""


# --------------------------------------------------------------------------- readers as the registry calls them
def _one_per_file(read_one: Callable[[str, str | None, str, SplitChoice], Dataset]) -> Reader:
    """A reader of one-file formats: each annotation file given is read on its own."""
    return lambda files, videos, task, split: [read_one(f, videos, task, split) for f in files]


def _by_name(files: Sequence[str], pattern: str, what: str) -> list[str]:
    found = [f for f in files if re.search(pattern, Path(f).name)]
    if not found:
        raise DatasetRequestError(f"no {what} among --annotations ({', '.join(Path(f).name for f in files)})")
    return found


def _fold_of(path: str) -> str:
    m = re.search(r"(\d)\.txt$", Path(path).name)
    return m.group(1) if m else "?"


def _missing_fold(split: str, files: Sequence[str]):
    raise DatasetRequestError(f"--split {split}: no annotation file of that split among "
                              f"{', '.join(Path(f).name for f in files)}")


def _kinetics(name: str) -> Reader:
    def read(files, videos, task, split):

        classes = load_labels(name).labels if name in BUNDLED_LABELS else None
        return [R.read_kinetics(f, videos, classes=classes, name=name) for f in files]

    return read


def _ucf101(files, videos, task, split):
    (class_ind,) = _by_name(files, r"classInd", "classInd.txt")
    tests = sorted(_by_name(files, r"testlist0\d\.txt", "testlist0N.txt"))
    if split:
        tests = [t for t in tests if _fold_of(t) == split] or _missing_fold(split, tests)
    return [R.read_ucf101(class_ind, t, videos) for t in tests]


def _hmdb51(files, videos, task, split):
    folds: dict[str, list[str]] = {}
    for f in _by_name(files, r"_test_split\d\.txt", "*_test_splitN.txt files"):
        folds.setdefault(_fold_of(f), []).append(f)
    if split and split not in folds:
        _missing_fold(split, files)
    return [R.read_hmdb51(folds[k], videos) for k in ([split] if split else sorted(folds))]


def _charades(files, videos, task, split):
    (test,) = _by_name(files, r"\.csv$", "Charades_v1_test.csv")
    (classes,) = _by_name(files, r"classes\.txt$", "Charades_v1_classes.txt")
    return [R.read_charades(test, classes, videos)]


_MAPPING = r"mapping"
"""How youtube_mapping.txt (MSVD's YouTube clip -> vidN) is recognised among --annotations."""


def _mapping_and_rest(files: Sequence[str]) -> tuple[str | None, list[str]]:
    """youtube_mapping.txt among the files (None if absent) and the other files."""
    mapping = [f for f in files if re.search(_MAPPING, Path(f).name)]
    return (mapping[0] if mapping else None), [f for f in files if f not in mapping]


def _msvd(files, videos, task, split):
    mapping, descriptions = _mapping_and_rest(files)
    return [R.read_msvd(f, videos, mapping=mapping, split=split, task=task) for f in descriptions]


def _msvd_qa(files, videos, task, split):
    mapping, questions = _mapping_and_rest(files)
    return [R.read_msvd_qa(f, videos, mapping=mapping) for f in questions]


def _activitynet_qa(files, videos, task, split):
    (q,) = _by_name(files, r"_q\.json$", "test_q.json")
    (a,) = _by_name(files, r"_a\.json$", "test_a.json")
    return [R.read_activitynet_qa(q, a, videos)]


def read_synthetic(annotations: str | os.PathLike, task: str) -> Dataset:
    """The synthetic benchmark's annotations.json, as the given task sees it (items carry groups for breakdowns)."""

    root = Path(annotations).parent
    if not (root / "annotations.json").is_file():
        raise AnnotationError(f"{str(annotations)!r} is not a synthetic benchmark's annotations.json")
    from ..synthetic.benchmark import load_benchmark  # noqa: PLC0415 - PyAV; the CLI's parser reads this module

    vitems, doc = load_benchmark(root)
    classes = doc["classes"]
    items: list[Item] = []
    for v in vitems:
        vid = Path(v.path).stem
        if task == "classify":
            items.append(Item(vid, v.path, labels=[classes.index(v.label)], group="late" if v.late else "early"))
        elif task == "retrieve":
            items.append(Item(vid, v.path, captions=v.captions[:1]))
        elif task == "caption":
            items.append(Item(vid, v.path, captions=list(v.captions), label_words=v.label.split()))
        else:
            for q, a, kind in v.questions:
                items.append(Item(vid, v.path, question=q, answers=[a], group=kind))
    return Dataset("synthetic", task, items, [], classes=classes)


_NO_SPLITS: Mapping[str, SplitChoice] = dict.fromkeys(PURPOSES)
_TEXT = ("retrieve", "caption")

REGISTRY: dict[str, DatasetSpec] = {s.name: s for s in [
    DatasetSpec("kinetics400", ("classify",), "the Kinetics csv (label,youtube_id,time_start,time_end,split)",
                _kinetics("kinetics400")),
    DatasetSpec("kinetics600", ("classify",), "the Kinetics-600 csv (label,youtube_id,time_start,time_end,split)",
                _kinetics("kinetics600")),
    DatasetSpec("kinetics700", ("classify",), "the Kinetics-700 csv (label,youtube_id,time_start,time_end,split)",
                _kinetics("kinetics700")),
    DatasetSpec("ucf101", ("classify",), "classInd.txt and testlist0N.txt (one or more folds)", _ucf101,
                splits=("1", "2", "3"), split_defaults=_NO_SPLITS),
    DatasetSpec("hmdb51", ("classify",), "the *_test_splitN.txt files (one or more folds)", _hmdb51,
                splits=("1", "2", "3"), split_defaults=_NO_SPLITS),
    DatasetSpec("charades", ("classify",), "Charades_v1_test.csv and Charades_v1_classes.txt", _charades),
    DatasetSpec("charades-sta", ("moments",), "charades_sta_test.txt (VIDEO START END##sentence)",
                _one_per_file(lambda f, v, t, s: R.read_charades_sta(f, v))),
    DatasetSpec("msrvtt", _TEXT, "train_val_videodatainfo.json (train, validate) or test_videodatainfo.json (test)",
                _one_per_file(lambda f, v, t, s: R.read_msrvtt(f, v, split=s, task=t)),
                splits=("train", "validate", "test")),
    DatasetSpec("msrvtt-1ka", ("retrieve",), "MSRVTT_JSFUSION_test.csv",
                _one_per_file(lambda f, v, t, s: R.read_msrvtt_1ka(f, v))),
    DatasetSpec("msvd", _TEXT, "AllVideoDescriptions.txt and youtube_mapping.txt (its vidN give the standard split: "
                "train vid1-1200, validate vid1201-1300, test vid1301-1970; without it every clip, unsplit)", _msvd,
                splits=R.SPLITS, split_file=_MAPPING),
    DatasetSpec("vatex", _TEXT, "the VATEX json of one split (e.g. vatex_public_test_english_v1.1.json)",
                _one_per_file(lambda f, v, t, s: R.read_vatex(f, v, task=t))),
    DatasetSpec("activitynet", _TEXT, "an ActivityNet Captions json (val_1.json): one paragraph per video",
                _one_per_file(lambda f, v, t, s: R.read_activitynet_captions(f, v, task=t))),
    DatasetSpec("activitynet-segments", _TEXT, "an ActivityNet Captions json (val_1.json): one item per segment",
                _one_per_file(lambda f, v, t, s: R.read_activitynet_captions(f, v, level="segment", task=t))),
    DatasetSpec("youcook2", _TEXT, "youcookii_annotations_trainval.json (train, validate)",
                _one_per_file(lambda f, v, t, s: R.read_youcook2(f, v, split=s, task=t)),
                splits=("train", "validate"), split_defaults={**DEFAULT_SPLITS, "eval": "validate",
                                                              "val": "validate"}),
    DatasetSpec("msrvtt-qa", ("qa",), "test.json of MSRVTT-QA",
                _one_per_file(lambda f, v, t, s: R.read_msrvtt_qa(f, v))),
    DatasetSpec("msvd-qa", ("qa",), "test_qa.json of MSVD-QA (and youtube_mapping.txt)", _msvd_qa),
    DatasetSpec("activitynet-qa", ("qa",), "test_q.json and test_a.json", _activitynet_qa),
    DatasetSpec("ivqa", ("qa",), "the iVQA csv", _one_per_file(lambda f, v, t, s: R.read_ivqa(f, v))),
    DatasetSpec("synthetic", ("classify", "retrieve", "caption", "qa"),
                "annotations.json of a synthetic benchmark folder",
                lambda files, videos, task, split: [read_synthetic(f, task) for f in files], needs_videos=False),
]}
"""Every benchmark videococa reads, by `--dataset` name."""


def datasets_for(task: str) -> list[str]:
    """Names of the datasets that serve a task, in registry order."""
    return [n for n, s in REGISTRY.items() if task in s.tasks]


def dataset_help(tasks: Sequence[str] = TASKS) -> str:
    """`--dataset` help: the datasets of each task."""
    return "; ".join(f"{t}: {'|'.join(datasets_for(t))}" for t in tasks)


def split_help() -> str:
    """`--split` help: the splits of each dataset that has several (and the file that gives them, if a second)."""
    by_splits: dict[tuple[str, ...], list[str]] = {}
    for s in REGISTRY.values():
        if s.splits:
            by_splits.setdefault(s.splits, []).append(s.name + (f" (with its {s.split_file} file)" if s.split_file
                                                                else ""))
    return "; ".join(f"{'|'.join(k)} for {', '.join(names)}" for k, names in by_splits.items())


def get_spec(name: str, task: str) -> DatasetSpec:
    """The dataset's declaration, checked to serve `task`."""
    if task not in TASKS:
        raise DatasetRequestError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    spec = REGISTRY.get(name)
    if spec is None or task not in spec.tasks:
        what = "is not a known dataset" if spec is None else f"is not a {task} benchmark"
        raise DatasetRequestError(f"dataset {name!r} {what}; choose one of: {', '.join(datasets_for(task))}")
    return spec


def load_datasets(task: str, name: str, annotations: Sequence[str | os.PathLike], videos: str | os.PathLike | None,
                  split: str | None = None, *, purpose: Purpose = "eval") -> list[Dataset]:
    """The dataset(s) `name` gives for `task`, read from the annotation files with the split `--split` names,
    or else the one `purpose` reads by default (see the module docstring). Each dataset is tagged with `task`."""
    if purpose not in PURPOSES:
        raise OptionError(f"unknown purpose {purpose!r}; choose one of: {', '.join(PURPOSES)}")
    spec = get_spec(name, task)
    files = [str(a) for a in annotations]
    if not files:
        raise DatasetRequestError(f"--annotations is required for {name}: {spec.annotations}")
    if spec.needs_videos and videos is None:
        raise DatasetRequestError("--videos DIR is required: the root of your local copy of the videos")
    if split is not None:
        if not spec.splits:
            raise DatasetRequestError(f"--split {split}: each {name} annotation file holds one split; give the file "
                                      f"of the split you want ({spec.annotations})")
        if split not in spec.splits:
            raise DatasetRequestError(f"--split {split!r} is not a split of {name}; choose one of: "
                                      f"{', '.join(spec.splits)}")
        chosen: SplitChoice = split
    elif spec.split_file and not any(re.search(spec.split_file, Path(f).name) for f in files):
        chosen = None  # no file gives the split: every item (the reader says so in Dataset.protocol)
    else:
        chosen = spec.split_defaults.get(purpose) if spec.splits else None
    out = spec.read(files, None if videos is None else str(videos), task, chosen)
    assert all(ds.task == task for ds in out), f"{name} read as {[ds.task for ds in out]}, not {task}"
    return out


def finetune_reading(task: str, dataset: str) -> tuple[str, list[str]]:
    """How `finetune --task` reads a dataset: (task of the training items, tasks validated after each epoch).

    caption and qa train and validate on themselves; retrieval trains on the captions and validates retrieval;
    retrieval+caption validates both where the dataset serves captioning.
    """
    spec = REGISTRY.get(dataset)
    serves = spec.tasks if spec is not None else ()
    if task in ("caption", "qa"):
        return task, [task]
    train = "caption" if "caption" in serves else "retrieve"
    return train, ["retrieve"] + (["caption"] if task == "retrieval+caption" and "caption" in serves else [])
