"""Readers for the official annotation formats of the standard video-text benchmarks.

Each reader takes the annotation file(s) and the root of the user's local copy of the videos and
returns a `Dataset`: items (video path, clip window, labels / captions / question and answers) and
the videos that are missing on disk (common for YouTube-sourced sets: counted, never fatal).
Videos are found by file name anywhere under the root (any common video extension), so both flat
folders and the per-class / per-split layouts of the usual download scripts work.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

from ..errors import AnnotationError, OptionError
from ..formats import VIDEO_SUFFIXES

TextTask = Literal["retrieve", "caption"]
"""How a captioned dataset is used: text<->video retrieval or captioning (the caller says which)."""
TEXT_TASKS: tuple[str, ...] = ("retrieve", "caption")
SPLITS: tuple[str, ...] = ("train", "validate", "test")
"""Split names of the files that hold several (MSR-VTT's videodatainfo json, YouCook2's trainval json)."""
SplitChoice = str | Sequence[str] | None
"""A split; splits in order of preference (the first one the file holds is read); or None for every split."""



@dataclass
class Item:
    """One evaluation item."""

    video_id: str
    """The dataset's id for the video."""
    path: str | None
    """The video file found under the root, or None if missing."""
    start: float | None = None
    """Clip start in seconds (None: from the beginning)."""
    end: float | None = None
    """Clip end in seconds (None: to the end)."""
    labels: list[int] = field(default_factory=list)
    """Class indices (one for single-label sets, several for Charades)."""
    captions: list[str] = field(default_factory=list)
    """Reference captions."""
    question: str | None = None
    """QA: the question."""
    answers: list[str] = field(default_factory=list)
    """QA: accepted answers."""
    group: str | None = None
    """A subset the item belongs to, reported separately (synthetic: late entry, question kind)."""
    label_words: list[str] = field(default_factory=list)
    """Words a good caption must contain (synthetic: the object's colour and shape)."""


@dataclass
class Dataset:
    """What a reader found."""

    name: str
    """Dataset name, with split."""
    task: str
    """classify, retrieve, caption, qa or moments: what the items are evaluated for."""
    items: list[Item]
    """Items whose video exists."""
    missing: list[str]
    """Video ids listed in the annotations but not found under the root."""
    classes: list[str] = field(default_factory=list)
    """Class names, for classification sets (indices in Item.labels point here)."""
    multi_label: bool = False
    """Items may carry several classes."""
    answer_agreement: int = 1
    """QA: how many annotators must give an answer for full credit (score min(1, n / this); iVQA: 2)."""
    protocol: dict[str, str] = field(default_factory=dict)
    """How the items were chosen, for the evaluation protocol (MSVD: the split, or that none was applied)."""


class VideoFinder:
    """Find a video by id (file stem) anywhere under a root, walking it once."""

    def __init__(self, root: str | os.PathLike):
        root = Path(root)
        if not root.is_dir():
            raise AnnotationError(f"video root {str(root)!r} is not a directory")
        self.by_stem: dict[str, str] = {}
        self.by_rel: dict[str, str] = {}
        for dirpath, _, files in os.walk(root):
            for f in files:
                stem, ext = os.path.splitext(f)
                if ext.lower() in VIDEO_SUFFIXES:
                    full = os.path.join(dirpath, f)
                    self.by_stem.setdefault(stem, full)
                    self.by_rel[os.path.relpath(full, root)] = full

    def __call__(self, video_id: str) -> str | None:
        return self.by_rel.get(video_id) or self.by_stem.get(os.path.splitext(os.path.basename(video_id))[0])


def _read(path: str | os.PathLike) -> str:
    p = Path(path)
    if not p.is_file():
        raise AnnotationError(f"annotation file {str(p)!r} does not exist")
    try:
        return p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"annotation file {str(p)!r} cannot be read: {exc}") from None


def _json(path: str | os.PathLike):
    try:
        return json.loads(_read(path))
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"annotation file {str(path)!r} is not valid JSON: {exc}") from None


def _csv_rows(path: str | os.PathLike, required: Sequence[str]) -> list[dict]:
    rows = list(csv.DictReader(_read(path).splitlines()))
    if rows:
        absent = [c for c in required if c not in rows[0]]
        if absent:
            raise AnnotationError(f"annotation file {str(path)!r} lacks column(s) {', '.join(absent)} "
                                  f"(has: {', '.join(rows[0])})")
    return rows


def _text_task(task: str) -> str:
    if task not in TEXT_TASKS:
        raise OptionError(f"unknown task {task!r} for a captioned dataset; choose one of: {', '.join(TEXT_TASKS)}")
    return task


def _pick_split(source: str | os.PathLike, available: Sequence[str], split: SplitChoice) -> str | None:
    """The split to read: `split`, else the first of several preferences that the file holds; None reads all."""
    if split is None:
        return None
    wanted = [split] if isinstance(split, str) else list(split)
    for s in wanted:
        if s not in SPLITS:
            raise OptionError(f"unknown split {s!r}; choose one of: {', '.join(SPLITS)}")
        if s in available:
            return s
    raise AnnotationError(f"{str(source)!r} has no videos in split {' or '.join(map(repr, wanted))}; "
                          f"the splits it has: {', '.join(available) or 'none'}")


def _collect(name: str, task: str, entries: list[tuple[str, Item]], find: VideoFinder, **kw) -> Dataset:
    items, missing = [], []
    for vid, item in entries:
        item.path = find(vid)
        if item.path is None:
            if vid not in missing:
                missing.append(vid)
        else:
            items.append(item)
    return Dataset(name, task, items, missing, **kw)


# --------------------------------------------------------------------------- classification
def read_kinetics(csv_path: str | os.PathLike, videos: str | os.PathLike, *, classes: Sequence[str] | None = None,
                  name: str = "kinetics") -> Dataset:
    """Kinetics-400/600/700 csv (label, youtube_id, time_start, time_end, split); files
    `{youtube_id}_{start:06d}_{end:06d}.mp4`. Classes: the given list, else the csv's sorted labels."""
    rows = _csv_rows(csv_path, ["label", "youtube_id", "time_start", "time_end"])
    classes = list(classes) if classes is not None else sorted({r["label"] for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    entries = []
    for r in rows:
        if r["label"] not in index:
            raise AnnotationError(f"{str(csv_path)!r}: label {r['label']!r} is not one of the {len(classes)} classes")
        s, e = int(float(r["time_start"])), int(float(r["time_end"]))
        vid = f"{r['youtube_id']}_{s:06d}_{e:06d}"
        entries.append((vid, Item(vid, None, labels=[index[r["label"]]])))
    return _collect(name, "classify", entries, VideoFinder(videos), classes=classes)


def read_ucf101(class_ind: str | os.PathLike, test_list: str | os.PathLike, videos: str | os.PathLike) -> Dataset:
    """UCF101: classInd.txt ("1 ApplyEyeMakeup") and testlist0N.txt ("ApplyEyeMakeup/v_..._g01_c01.avi")."""
    classes = []
    for line in _read(class_ind).split("\n"):
        if line.strip():
            num, cls = line.split()
            if int(num) != len(classes) + 1:
                raise AnnotationError(f"{str(class_ind)!r}: class numbers must run 1, 2, ...; got {num}")
            classes.append(cls)
    index = {c: i for i, c in enumerate(classes)}
    entries = []
    for line in _read(test_list).split("\n"):
        rel = line.strip().split(" ")[0]
        if rel:
            cls = rel.split("/")[0]
            if cls not in index:
                raise AnnotationError(f"{str(test_list)!r}: {rel!r} names class {cls!r}, not in {str(class_ind)!r}")
            entries.append((rel, Item(rel, None, labels=[index[cls]])))
    split = re.search(r"(\d)\.txt$", str(test_list))
    return _collect(f"ucf101-split{split.group(1) if split else '?'}", "classify", entries, VideoFinder(videos),
                    classes=classes)


def read_hmdb51(split_files: Sequence[str | os.PathLike], videos: str | os.PathLike) -> Dataset:
    """HMDB51: `{class}_test_split{N}.txt` files, lines "file.avi 1|2|0" (1 train, 2 test); test items only."""
    classes, entries, splits = [], [], set()
    for f in sorted(split_files, key=lambda p: Path(p).name):
        m = re.fullmatch(r"(.+)_test_split(\d)\.txt", Path(f).name)
        if not m:
            raise AnnotationError(f"{str(f)!r} is not named like an HMDB51 split file ({{class}}_test_split{{N}}.txt)")
        cls, split = m.group(1), m.group(2)
        splits.add(split)
        if cls not in classes:
            classes.append(cls)
        for line in _read(f).split("\n"):
            parts = line.split()
            if len(parts) == 2 and parts[1] == "2":
                entries.append((parts[0], Item(parts[0], None, labels=[classes.index(cls)])))
    if len(splits) != 1:
        raise AnnotationError(f"give the split files of one split; got splits {sorted(splits)}")
    return _collect(f"hmdb51-split{splits.pop()}", "classify", entries, VideoFinder(videos), classes=classes)


def read_charades(test_csv: str | os.PathLike, classes_txt: str | os.PathLike, videos: str | os.PathLike) -> Dataset:
    """Charades: Charades_v1_test.csv (id, actions "c092 11.90 21.20;...") and Charades_v1_classes.txt; multi-label."""
    ids = []
    names = []
    for line in _read(classes_txt).split("\n"):
        if line.strip():
            cid, text = line.strip().split(" ", 1)
            ids.append(cid)
            names.append(text)
    index = {c: i for i, c in enumerate(ids)}
    entries = []
    for r in _csv_rows(test_csv, ["id", "actions"]):
        labels = sorted({index[a.split()[0]] for a in r["actions"].split(";") if a.strip()})
        entries.append((r["id"], Item(r["id"], None, labels=labels)))
    return _collect("charades", "classify", entries, VideoFinder(videos), classes=ids, multi_label=True)


# --------------------------------------------------------------------------- retrieval and captioning
def read_msrvtt(videodatainfo: str | os.PathLike, videos: str | os.PathLike, *, split: SplitChoice = "test",
                task: TextTask = "retrieve") -> Dataset:
    """MSR-VTT full split: train_val_videodatainfo.json (train 6513 + validate 497 videos) or
    test_videodatainfo.json (test 2990 videos), each video with its 20 sentences.

    `split`: the split to read (train, validate, test), several in order of preference (the first the file
    holds), or None for every video in the file. `task`: what the dataset is for (retrieve or caption).
    """
    _text_task(task)
    data = _json(videodatainfo)
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list):
        raise AnnotationError(f"{str(videodatainfo)!r} is not an MSR-VTT videodatainfo json (no 'videos' list)")
    available = [s for s in SPLITS if any(v.get("split") == s for v in data["videos"])]
    chosen = _pick_split(videodatainfo, available, split)
    caps: dict[str, list[str]] = {}
    for s in data.get("sentences", []):
        caps.setdefault(s["video_id"], []).append(s["caption"].strip())
    entries = [(v["video_id"], Item(v["video_id"], None, captions=caps.get(v["video_id"], [])))
               for v in data["videos"] if chosen is None or v.get("split") == chosen]
    return _collect(f"msrvtt-{chosen or 'all'}", task, entries, VideoFinder(videos))


def read_msrvtt_1ka(csv_path: str | os.PathLike, videos: str | os.PathLike) -> Dataset:
    """MSR-VTT 1k-A test split (MSRVTT_JSFUSION_test.csv: key, vid_key, video_id, sentence): one caption each."""
    entries = [(r["video_id"], Item(r["video_id"], None, captions=[r["sentence"].strip()]))
               for r in _csv_rows(csv_path, ["video_id", "sentence"])]
    return _collect("msrvtt-1ka", "retrieve", entries, VideoFinder(videos))


MSVD_SPLITS: dict[str, range] = {"train": range(1, 1201), "validate": range(1201, 1301), "test": range(1301, 1971)}
"""The standard MSVD captioning/retrieval split by the vidN of youtube_mapping.txt (Venugopalan et al. 2015,
"Sequence to Sequence - Video to Text"): 1200 train, 100 validate, 670 test clips.
Checked against ../shared/annotations: youtube_mapping.txt (both copies) numbers its 1970 clips vid1-vid1970.
MSVD-QA's files agree on train only: train_qa.json's video_ids lie in 1-1200, but val_qa.json's in 1201-1450 and
test_qa.json's in 1451-1970 (MSVD-QA's own 1200/250/520 split, Xu et al. 2017), so its validate and test are not
these; msvd-qa reads the file of the split it is given and does not use this table."""


def _youtube_mapping(path: str | os.PathLike) -> dict[str, int]:
    """youtube_mapping.txt ("{youtube clip name} vid{N}" per line): clip name -> N."""
    numbers = {}
    for lineno, line in enumerate(_read(path).splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not re.fullmatch(r"vid[1-9]\d*", parts[1]):
            raise AnnotationError(f"{str(path)!r} line {lineno}: {line.strip()[:80]!r} is not "
                                  "'YOUTUBE_CLIP vidN' (a youtube_mapping.txt line)")
        numbers[parts[0]] = int(parts[1][3:])
    return numbers


def read_msvd(descriptions: str | os.PathLike, videos: str | os.PathLike, *,
              mapping: str | os.PathLike | None = None, split: SplitChoice = None,
              task: TextTask = "retrieve") -> Dataset:
    """MSVD: AllVideoDescriptions.txt ("{video} {caption}" per line; '#' lines are comments).

    `split` (train, validate, test; several in order of preference; None: every clip) is the standard split
    (`MSVD_SPLITS`), which needs `mapping` (youtube_mapping.txt) to number the clips. Without `mapping` and
    `split` every clip is read and `Dataset.protocol` records that no split was applied.
    """
    _text_task(task)
    caps: dict[str, list[str]] = {}
    for line in _read(descriptions).split("\n"):
        if line.strip() and not line.startswith("#"):
            vid, cap = line.strip().split(" ", 1)
            caps.setdefault(vid, []).append(cap.strip())
    if mapping is None:
        if split is not None:
            wanted = split if isinstance(split, str) else " or ".join(split)
            raise AnnotationError(f"{str(descriptions)!r}: the MSVD {wanted} split is given by youtube_mapping.txt "
                                  "(YouTube clip -> vidN), which was not given; pass it with the descriptions "
                                  "(--annotations AllVideoDescriptions.txt youtube_mapping.txt)")
        entries = [(v, Item(v, None, captions=c)) for v, c in caps.items()]
        return _collect("msvd", task, entries, VideoFinder(videos),
                        protocol={"split": "none applied: youtube_mapping.txt not given, so every clip of "
                                           f"{Path(descriptions).name} is used"})
    numbers = _youtube_mapping(mapping)
    unmapped = [v for v in caps if v not in numbers]
    if unmapped:
        raise AnnotationError(f"{len(unmapped)} clip(s) of {str(descriptions)!r} are not in {str(mapping)!r} "
                              f"(first: {unmapped[0]!r}), so their split is unknown; is it MSVD's youtube_mapping.txt?")
    split_of = {v: s for v in caps for s, vids in MSVD_SPLITS.items() if numbers[v] in vids}
    available = [s for s in SPLITS if s in split_of.values()]
    chosen = _pick_split(descriptions, available, split)
    entries = [(v, Item(v, None, captions=c)) for v, c in caps.items() if chosen is None or split_of.get(v) == chosen]
    return _collect(f"msvd-{chosen or 'all'}", task, entries, VideoFinder(videos), protocol={"split": chosen or "all"})


def read_vatex(json_path: str | os.PathLike, videos: str | os.PathLike, *, task: TextTask = "retrieve") -> Dataset:
    """VATEX: [{"videoID": "{youtube_id}_{start:06d}_{end:06d}", "enCap": [...]}]; English captions."""
    data = _json(json_path)
    entries = [(d["videoID"], Item(d["videoID"], None, captions=[c.strip() for c in d.get("enCap", [])]))
               for d in data]
    return _collect("vatex", _text_task(task), entries, VideoFinder(videos))


def read_activitynet_captions(json_path: str | os.PathLike, videos: str | os.PathLike, *,
                              level: Literal["paragraph", "segment"] = "paragraph",
                              task: TextTask = "retrieve") -> Dataset:
    """ActivityNet Captions ({"v_id": {"duration", "timestamps", "sentences"}}): one item per video with the
    paragraph (`level="paragraph"`), or one per timestamped segment (`level="segment"`)."""
    if level not in ("paragraph", "segment"):
        raise OptionError(f"unknown level {level!r}; choose one of: paragraph, segment")
    entries = []
    for vid, d in _json(json_path).items():
        if level == "paragraph":
            entries.append((vid, Item(vid, None, captions=[" ".join(s.strip() for s in d["sentences"])])))
        else:
            for (s, e), sent in zip(d["timestamps"], d["sentences"]):
                entries.append((vid, Item(vid, None, start=float(s), end=float(e), captions=[sent.strip()])))
    return _collect(f"activitynet-{level}", _text_task(task), entries, VideoFinder(videos))


YOUCOOK2_SUBSETS = {"train": "training", "validate": "validation", "test": "testing"}
"""Our split names -> the `subset` values of youcookii_annotations_trainval.json."""


def read_youcook2(json_path: str | os.PathLike, videos: str | os.PathLike, *, split: SplitChoice = "validate",
                  task: TextTask = "caption") -> Dataset:
    """YouCook2 (youcookii_annotations_trainval.json): one item per annotated segment of the split
    (train = subset "training", validate = "validation"; the test annotations are not public)."""
    _text_task(task)
    db = _json(json_path).get("database", {})
    available = [s for s in SPLITS if any(d.get("subset") == YOUCOOK2_SUBSETS[s] for d in db.values())]
    chosen = _pick_split(json_path, available, split)
    entries = [(vid, Item(vid, None, start=float(a["segment"][0]), end=float(a["segment"][1]),
                          captions=[a["sentence"].strip()]))
               for vid, d in db.items() if chosen is None or d.get("subset") == YOUCOOK2_SUBSETS[chosen]
               for a in d.get("annotations", [])]
    return _collect(f"youcook2-{chosen or 'all'}", task, entries, VideoFinder(videos))


# --------------------------------------------------------------------------- moment retrieval
def read_charades_sta(txt_path: str | os.PathLike, videos: str | os.PathLike) -> Dataset:
    """Charades-STA (charades_sta_test.txt, lines "VIDEO START END##sentence"): one item per query, with the
    annotated moment as (start, end) and the sentence as its caption."""
    entries = []
    for lineno, line in enumerate(_read(txt_path).splitlines(), 1):
        if not line.strip():
            continue
        head, sep, sentence = line.partition("##")
        parts = head.split()
        try:
            vid, start, end = parts[0], float(parts[1]), float(parts[2])
        except (IndexError, ValueError):
            raise AnnotationError(f"{str(txt_path)!r} line {lineno}: {line.strip()[:80]!r} is not "
                                  "'VIDEO START END##sentence'") from None
        if not sep or not sentence.strip() or len(parts) != 3 or end <= start:
            raise AnnotationError(f"{str(txt_path)!r} line {lineno}: {line.strip()[:80]!r} is not "
                                  "'VIDEO START END##sentence' with END after START")
        entries.append((vid, Item(vid, None, start=start, end=end, captions=[sentence.strip()])))
    return _collect("charades-sta", "moments", entries, VideoFinder(videos))


# --------------------------------------------------------------------------- question answering
def read_qa_json(json_path: str | os.PathLike, videos: str | os.PathLike, *, name: str,
                 video_name: Callable[[object], str] = str) -> Dataset:
    """MSRVTT-QA / MSVD-QA: [{"question", "answer", "video_id"}]. `video_name` maps the id to a file stem
    (MSRVTT-QA: 7010 -> "video7010")."""
    entries = []
    for d in _json(json_path):
        vid = video_name(d["video_id"])
        entries.append((vid, Item(vid, None, question=d["question"].strip(), answers=[str(d["answer"]).strip()])))
    return _collect(name, "qa", entries, VideoFinder(videos))


def read_msrvtt_qa(json_path, videos) -> Dataset:
    return read_qa_json(json_path, videos, name="msrvtt-qa", video_name=lambda v: f"video{v}")


def read_msvd_qa(json_path, videos, *, mapping: str | os.PathLike | None = None) -> Dataset:
    """MSVD-QA; with `mapping` (youtube_mapping.txt: "{youtube name} vid{N}") ids map to the original file names."""
    names = {f"vid{n}": yt for yt, n in _youtube_mapping(mapping).items()} if mapping is not None else {}
    return read_qa_json(json_path, videos, name="msvd-qa", video_name=lambda v: names.get(f"vid{v}", f"vid{v}"))


def read_activitynet_qa(questions: str | os.PathLike, answers: str | os.PathLike, videos) -> Dataset:
    """ActivityNet-QA: test_q.json [{"question", "question_id", "video_name"}] + test_a.json [{"answer", "question_id"}]."""
    ans = {a["question_id"]: str(a["answer"]).strip() for a in _json(answers)}
    entries = []
    for q in _json(questions):
        vid = "v_" + q["video_name"]
        entries.append((vid, Item(vid, None, question=q["question"].strip(), answers=[ans[q["question_id"]]])))
    return _collect("activitynet-qa", "qa", entries, VideoFinder(videos))


def read_ivqa(csv_path: str | os.PathLike, videos: str | os.PathLike) -> Dataset:
    """iVQA csv (video_id, start, end, question, answer1..answer5), scored by the official iVQA metric:
    min(1, annotators who gave the predicted answer / 2) (`Dataset.answer_agreement` = 2)."""
    rows = _csv_rows(csv_path, ["video_id", "start", "end", "question", "answer1"])
    entries = []
    for r in rows:
        answers = [r[k].strip() for k in ("answer1", "answer2", "answer3", "answer4", "answer5") if r.get(k, "").strip()]
        vid = f"{r['video_id']}_{int(float(r['start']))}_{int(float(r['end']))}"
        entries.append((vid, Item(vid, None, question=r["question"].strip(), answers=answers)))
    return _collect("ivqa", "qa", entries, VideoFinder(videos), answer_agreement=2)
