"""Decoding with PyAV: probe a file, and fetch the frames displayed at given times by seeking.

The frame returned for time t is the one a player shows at t: the last frame whose
presentation time is <= t (the first frame for t before it). Times are seconds from the
stream's start. Only the GOPs that hold the targets are decoded: before a target whose
keyframe lies ahead of the decoding position we seek, otherwise we decode on. In H.264, frames that no other
frame references and that are replaced on screen before the target are not decoded at all (skip_frame=NONREF);
when a skipped frame could have been the one shown, the target is decoded again without skipping.

`keyframes_at` is the opt-in fast mode for very large libraries: for each time it decodes only the keyframe
nearest to it (skip_frame=NONKEY) and returns that keyframe's own time, which can be seconds away.
"""

from __future__ import annotations

import bisect
import errno
import math
import os
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import av
import numpy as np

from ..errors import VideoDecodeError
from ..formats import IMAGE_SUFFIXES, VIDEO_SUFFIXES  # noqa: F401 - re-exported: callers import them from here too
from ..paths import display, regular_file_problem

T = TypeVar("T")
TRUNCATION_TOLERANCE = 0.5
"""Seconds of stated duration that may lack data before a file counts as truncated (2 frames if longer)."""
_here = threading.local()  # per calling thread: `one_decoder_thread_here`


def one_decoder_thread_here() -> None:
    """Files opened from now on in the calling thread decode on one FFmpeg thread instead of FFmpeg's choice.

    For threads that each read their own files next to a model using every core (VideoLoader's): there the
    parallelism is across files, and more decoder threads than cores only preempt the model's threads. On intact
    streams the frames are the same (FFmpeg's threaded decoding is bit-exact); on damaged ones its frame threads
    conceal errors differently, so every path whose outputs must agree (the local loader, the Ray decoding tasks)
    reads through this setting."""
    _here.one_thread = True


NONREF_SKIP_CODECS = frozenset({"h264"})
"""Codecs whose decoder may skip non-reference frames shown before a target (FFmpeg's skip_frame=NONREF): no other
frame is predicted from them, so skipping leaves every decoded frame bit for bit as it was (tested against a
full decode). Other codecs decode every frame."""


@dataclass(frozen=True)
class VideoInfo:
    """What a file holds, as read from its headers (and the first frame)."""

    path: str
    """The file, as given."""
    duration: float
    """Length in seconds (0.0 for a still image)."""
    fps: float | None
    """Average frame rate, if the container states one."""
    width: int
    """Displayed width in pixels, after rotation."""
    height: int
    """Displayed height in pixels, after rotation."""
    codec: str
    """Video codec name (e.g. 'h264', 'vp9'; 'image' for stills read with PIL)."""
    pix_fmt: str | None
    """Pixel format of the coded frames (e.g. 'yuv420p', 'yuv420p10le', 'gray')."""
    rotation: int
    """Counter-clockwise degrees (0, 90, 180, 270) applied to make frames upright, from the display matrix."""
    num_frames: int | None
    """Number of frames when the container states it, else None."""
    is_image: bool = False
    """True for a still image read as a 1-frame video."""


# --------------------------------------------------------------------------- errors
def _sniff(path: Path) -> str:
    """A plain-words guess of what a non-video file is, from its first bytes."""
    try:
        head = path.open("rb").read(512)
    except OSError:
        return ""
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text[:200]:
        return " (it looks like an HTML page, e.g. a failed download)"
    if text.startswith((b"{", b"[")):
        return " (it looks like JSON text)"
    try:
        head.decode("utf-8")
        return " (it looks like a text file)"
    except UnicodeDecodeError:
        return ""


def check_readable(path: str | os.PathLike) -> Path:
    """Raise VideoDecodeError naming the file unless it is an existing, non-empty, readable regular file.

    FIFOs, sockets and devices are refused before anything opens them (opening a FIFO blocks).
    """
    p = Path(path)
    problem = regular_file_problem(p)
    if problem is not None:
        if problem == "no such file or directory":
            problem = "file not found"
        elif problem.startswith("is a directory"):
            problem = "is a directory, not a video file"
        raise VideoDecodeError(f"{display(path)!r}: {problem}")
    try:
        size = p.stat().st_size
        with p.open("rb"):
            pass
    except PermissionError:
        raise VideoDecodeError(f"{display(path)!r}: permission denied (cannot read the file)") from None
    if size == 0:
        raise VideoDecodeError(f"{display(path)!r}: file is empty (0 bytes)")
    return p


def _container_kind(path: Path) -> str | None:
    """The video container a file's signature announces (mp4/mov, Matroska/WebM, AVI), if any."""
    try:
        head = path.open("rb").read(16)
    except OSError:
        return None
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide"):
        return "mp4/mov"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "Matroska/WebM"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "AVI"
    return None


def _open_error(path: str, exc: Exception) -> VideoDecodeError:
    if isinstance(exc, PermissionError) or getattr(exc, "errno", None) == errno.EACCES:
        return VideoDecodeError(f"{path!r}: permission denied (cannot read the file)")
    msg = str(exc)
    kind = _container_kind(Path(path))
    if kind is not None and isinstance(exc, (av.error.InvalidDataError, av.error.EOFError)):
        extra = " (the mp4 index, its 'moov' atom, is missing)" if kind == "mp4/mov" else ""
        return VideoDecodeError(f"{path!r}: truncated or corrupt {kind} video{extra}")
    if isinstance(exc, av.error.InvalidDataError):
        return VideoDecodeError(f"{path!r}: not a video or image file FFmpeg can read{_sniff(Path(path))}")
    return VideoDecodeError(f"{path!r}: cannot open: {type(exc).__name__}: {msg}")


# --------------------------------------------------------------------------- frame conversion
def _to_rgb(frame: av.VideoFrame, rotation: int) -> np.ndarray:
    """An upright (H, W, 3) uint8 RGB array from any pixel format (10-bit, gray, 4:4:4 ...)."""
    img = frame.to_ndarray(format="rgb24")  # swscale converts every pixel format
    k = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(img, k=k)) if k else img


# --------------------------------------------------------------------------- sources
class _ImageSource:
    """A still image read with PIL (EXIF orientation applied) as a 1-frame video."""

    def __init__(self, path: Path, shown: str):
        from PIL import Image, ImageOps, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                im = ImageOps.exif_transpose(im)
                self._rgb = np.array(im.convert("RGB"))  # a writable copy
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise VideoDecodeError(f"{shown!r}: not a readable image: {exc}") from None
        h, w = self._rgb.shape[:2]
        self.info = VideoInfo(shown, 0.0, None, w, h, "image", None, 0, 1, is_image=True)

    def frames_at(self, times: Sequence[float], transform: Callable[[np.ndarray], T]) -> tuple[list[T], list[float]]:
        out = transform(self._rgb)
        return [out] * len(times), [0.0] * len(times)

    keyframes_at = frames_at  # a still image is its own keyframe

    def iter_frames(self) -> Iterator[tuple[float, np.ndarray]]:
        yield 0.0, self._rgb

    truncated_at = None  # a still image is whole or unreadable

    def close(self) -> None:
        pass


class _AVSource:
    """A video file opened with PyAV, read by seeking to the keyframe before each target."""

    def __init__(self, path: Path, shown: str):
        self.shown = shown
        try:
            self.container = av.open(str(path), metadata_errors="ignore")
        except Exception as exc:  # noqa: BLE001 - FFmpeg raises many error types
            raise _open_error(shown, exc) from None
        try:
            self._setup()
        except BaseException:
            self.container.close()
            raise

    def _setup(self) -> None:
        c = self.container
        if not c.streams.video:
            kinds = sorted({s.type for s in c.streams})
            what = "audio only" if kinds == ["audio"] else ("no streams" if not kinds else ", ".join(kinds))
            raise VideoDecodeError(f"{self.shown!r}: has no video stream ({what})")
        s = self.stream = c.streams.video[0]
        s.thread_type = "AUTO"  # frame+slice threads inside FFmpeg
        if getattr(_here, "one_thread", False):
            s.codec_context.thread_count = 1
        cc = s.codec_context
        if cc is None or cc.name in (None, "", "none"):
            raise VideoDecodeError(f"{self.shown!r}: unsupported video codec (FFmpeg has no decoder for it)")
        self.start = s.start_time if s.start_time is not None else 0
        tb = s.time_base
        if s.duration:
            duration = float(s.duration * tb)
        elif c.duration:
            duration = c.duration / av.time_base - (float(self.start * tb) if s.start_time else 0.0)
        else:
            duration = self._scan_duration()
        fps = float(s.average_rate) if s.average_rate else None
        self.keyframes = sorted(e.timestamp for e in s.index_entries if e.is_keyframe) if s.index_entries else []
        self._skip_nonref = cc.name in NONREF_SKIP_CODECS
        self._skip_below: int | None = None  # packets shown only before this pts may be skipped if non-reference
        self._skipped_max: int | None = None  # largest pts of a packet decoded with skipping on, since the last seek
        self._keys_only = False  # keyframes_at: the decoder drops every frame but keyframes
        self._skip_mode = "DEFAULT"  # the decoder's skip_frame setting now
        self._key_shift = 0  # display time of the first keyframe minus its time in the index
        self._last_key: tuple[int, av.VideoFrame] | None = None  # keyframes_at: the keyframe decoded last
        self._iter: Iterator[av.VideoFrame] | None = None  # decoded frames from the demux position
        self._last: av.VideoFrame | None = None  # last frame consumed (pts <= the current target)
        self._pending: av.VideoFrame | None = None  # one frame decoded past the current target
        self.data_end: float | None = None  # end of the last packet, once demuxing has reached the end of the data
        first = self._first_frame()
        if self.keyframes and first.pts is not None and first.key_frame:
            # the index holds decoding times (mp4 with B-frames: ahead of display), seeking takes display times
            self._key_shift = first.pts - self.keyframes[0]
        self.rotation = (round((first.rotation or 0) / 90) * 90) % 360  # 0, 90, 180 or 270
        w, h = first.width, first.height
        if round(self.rotation / 90) % 2:
            w, h = h, w
        self.info = VideoInfo(
            path=self.shown,
            duration=max(duration, 0.0),
            fps=fps,
            width=w,
            height=h,
            codec=cc.name,
            pix_fmt=cc.pix_fmt,
            rotation=self.rotation,
            num_frames=s.frames or None,
        )

    def _scan_duration(self) -> float:
        """Duration from packet timestamps (no decoding), for containers that state none."""
        end = None
        try:
            for packet in self.container.demux(self.stream):
                if packet.pts is not None:
                    stop = packet.pts + (packet.duration or 0)
                    end = stop if end is None else max(end, stop)
        except av.error.FFmpegError:
            pass  # a cut-off file: use what was scanned
        self.container.seek(self.start, stream=self.stream, backward=True, any_frame=False)
        return 0.0 if end is None else float((end - self.start) * self.stream.time_base)

    def _decode_iter(self) -> Iterator[av.VideoFrame]:
        """Frames from the current demux position; stops quietly at a truncated or corrupt tail.

        When demuxing reaches the end of the data, `data_end` records where the last packet that
        was really there ends (seconds): a cut-off file ends early although its header states more.
        """
        end = None
        try:
            for packet in self.container.demux(self.stream):
                if packet.pts is not None and packet.size:
                    stop = packet.pts + (packet.duration or 0)
                    end = stop if end is None else max(end, stop)
                self._set_skip(packet)
                try:
                    yield from packet.decode()
                except (av.error.InvalidDataError, av.error.EOFError):
                    continue  # a damaged packet: skip it, later keyframes may still decode
        except (av.error.InvalidDataError, av.error.EOFError, av.error.OSError):
            pass  # demuxing ran into a cut-off file: keep what decoded
        if end is not None:
            self.data_end = float((end - self.start) * self.stream.time_base)

    def _set_skip(self, packet: av.Packet) -> None:
        """Tell the decoder whether it may drop `packet`'s frame: all but keyframes in keyframes mode; a
        non-reference frame whose display ends at or before the current target (a later frame replaces it)."""
        mode = "DEFAULT"
        if self._keys_only:
            mode = "NONKEY"
        elif (self._skip_below is not None and packet.pts is not None and packet.duration
              and packet.pts + packet.duration <= self._skip_below):
            mode = "NONREF"
            self._skipped_max = packet.pts if self._skipped_max is None else max(self._skipped_max, packet.pts)
        if mode != self._skip_mode:
            self.stream.codec_context.skip_frame = mode  # read by FFmpeg for each packet sent
            self._skip_mode = mode

    @property
    def truncated_at(self) -> float | None:
        """Where the decodable data ends (seconds), if reading found it well before the stated duration."""
        if self.data_end is None:
            return None
        fps = self.info.fps or 25.0
        if self.data_end < self.info.duration - max(2.0 / fps, TRUNCATION_TOLERANCE):
            return self.data_end
        return None

    def _first_frame(self) -> av.VideoFrame:
        """Decode the first frame and keep it as the decoding position (reads from the start need no seek)."""
        frames = self._decode_iter()
        try:
            for frame in frames:
                self._iter, self._pending = frames, frame
                return frame
        except av.error.DecoderNotFoundError:
            raise VideoDecodeError(f"{self.shown!r}: unsupported video codec (FFmpeg has no decoder for it)") from None
        except av.error.FFmpegError as exc:
            raise VideoDecodeError(f"{self.shown!r}: cannot decode: {exc}") from None
        raise VideoDecodeError(f"{self.shown!r}: truncated or corrupt video (no frame could be decoded)")

    def _seek(self, pts: int) -> None:
        try:
            self.container.seek(max(pts, self.start), stream=self.stream, backward=True, any_frame=False)
        except (av.error.InvalidDataError, av.error.EOFError, av.error.OSError, av.error.PermissionError):
            pass  # a seek into a cut-off tail: decoding goes on from wherever the demuxer is
        self._iter = self._decode_iter()
        self._last = self._pending = None
        self._skipped_max = None

    def _seek_to(self, target: int) -> None:
        """Seek so that decoding starts at a frame with pts <= target, stepping back when the demuxer lands late."""
        back, step = 0, max(int(1 / self.stream.time_base), 1)  # first step back: one second
        while True:
            self._seek(target - back)
            self._pending = next(self._iter, None)
            if self._pending is None or self._pending.pts is None or self._pending.pts <= target:
                return
            if target - back <= self.start:
                return  # already at the stream start: target lies before the first frame
            back = step if back == 0 else back * 2

    def _position(self) -> int | None:
        frame = self._pending or self._last
        return None if frame is None else frame.pts

    def _needs_seek(self, target: int) -> bool:
        """Seek when there is no decoder position yet, or a keyframe lies between it and the target."""
        pos = self._position()
        if self._iter is None or pos is None:
            return True
        last = self._last.pts if self._last is not None else None
        if target < (pos if last is None else last):
            return True  # behind the decoder (an earlier call's times): go back
        if target <= pos:
            return False
        if not self.keyframes:  # no index (e.g. webm before its cues are read): seek across > 2 s gaps
            return float((target - pos) * self.stream.time_base) > 2.0
        return bisect.bisect_right(self.keyframes, target) > bisect.bisect_right(self.keyframes, pos)

    def _advance(self, target: int) -> None:
        """Consume frames up to the last one with pts <= target; keep the next one pending."""
        if self._pending is not None and self._pending.pts is not None and self._pending.pts > target:
            return
        frame, self._pending = self._pending, None
        while True:
            if frame is None:
                frame = next(self._iter, None)
                if frame is None:
                    return  # end of stream
            if frame.pts is not None and frame.pts > target:
                self._pending = frame
                return
            self._last, frame = frame, None

    def _target(self, seconds: float) -> int:
        """A time in seconds from the start as a pts (rounded down to the stream's time base)."""
        return self.start + math.floor(Fraction(seconds).limit_denominator(10**6) / self.stream.time_base)

    def _shown_at(self, target: int) -> av.VideoFrame | None:
        """The frame shown at `target` (the first frame before it), None if nothing decodes."""
        self._skip_below = target if self._skip_nonref else None
        if self._needs_seek(target):
            self._seek_to(target)
        self._advance(target)
        frame = self._last or self._pending
        if (frame is not None and frame.pts is not None and self._skipped_max is not None
                and frame.pts < self._skipped_max):  # a skipped frame may be the one shown: decode all again
            self._skip_below = None
            self._seek_to(target)
            self._advance(target)
            frame = self._last or self._pending
        self._skip_below = None
        if frame is None:  # decoding from the seek point failed (cut-off tail): read on from the start
            self._seek(self.start)
            self._advance(target)
            frame = self._last or self._pending
        return frame

    def _keyframe_near(self, target: int) -> av.VideoFrame | None:
        """The keyframe nearest to `target` by the file's index (the earlier one of two equally near; without an
        index, the one the demuxer seeks to: at or before `target`), decoding nothing else."""
        key = target
        if self.keyframes:
            shown = target - self._key_shift  # on the index's clock
            j = bisect.bisect_right(self.keyframes, shown)
            key = min(self.keyframes[max(j - 1, 0) : j + 1], key=lambda k: (abs(k - shown), k)) + self._key_shift
            if self._last_key is not None and self._last_key[0] == key:
                return self._last_key[1]  # times in order: neighbours share a keyframe, decoded once
        self._keys_only = True
        try:
            for start in (key, self.start):  # from the start when the seek lands in a cut-off tail
                self._seek(start)
                frame = next(self._iter, None)
                if frame is not None:
                    self._last_key = (key, frame)
                    return frame
            return None
        finally:
            self._keys_only = False
            self._iter = self._last = self._pending = None  # the next exact read seeks afresh

    def frames_at(self, times: Sequence[float], transform: Callable[[np.ndarray], T]) -> tuple[list[T], list[float]]:
        """The frames displayed at `times` (seconds), each distinct frame passed through `transform` once.

        Returns the transformed frames in the order of `times` and each frame's own time (seconds).
        Only a couple of full-resolution frames are alive at a time.
        """
        return self._collect(times, transform, self._shown_at)

    def keyframes_at(self, times: Sequence[float], transform: Callable[[np.ndarray], T]) -> tuple[list[T], list[float]]:
        """Like `frames_at`, but each time gets the keyframe nearest to it, and only keyframes are decoded.

        The returned times are the keyframes' own, which can lie seconds from the times asked for: the caller
        reports them. Much faster on files with long GOPs; a file with one keyframe gives it for every time.
        """
        return self._collect(times, transform, self._keyframe_near)

    def _collect(self, times: Sequence[float], transform: Callable[[np.ndarray], T],
                 pick: Callable[[int], av.VideoFrame | None]) -> tuple[list[T], list[float]]:
        """`pick(target pts)` for each of `times` in time order; each distinct frame transformed once."""
        tb = self.stream.time_base
        results: list = [None] * len(times)
        stamps: list[float] = [0.0] * len(times)
        done: dict[int, tuple[float, T]] = {}  # pts -> (seconds, transformed)
        last_good: tuple[float, T] | None = None
        for i in sorted(range(len(times)), key=lambda k: times[k]):
            frame = pick(self._target(times[i]))
            if frame is None:
                if last_good is None:
                    raise VideoDecodeError(f"{self.shown!r}: truncated or corrupt video (no frame could be decoded)")
                results[i], stamps[i] = last_good[1], last_good[0]
                continue
            key = frame.pts if frame.pts is not None else -1
            if key not in done:
                t = float((frame.pts - self.start) * tb) if frame.pts is not None else 0.0
                done[key] = (t, transform(_to_rgb(frame, self.rotation)))
            last_good = done[key]
            stamps[i], results[i] = last_good
        return results, stamps

    def iter_frames(self) -> Iterator[tuple[float, np.ndarray]]:
        """Every frame in order from the start (a full sequential decode)."""
        self._seek(self.start)
        t = 0.0
        for frame in self._iter:
            if frame.pts is not None:
                t = float((frame.pts - self.start) * self.stream.time_base)
            yield t, _to_rgb(frame, self.rotation)
        self._iter = None

    def close(self) -> None:
        self.container.close()


def _is_animated(path: Path) -> bool:
    """True for an image file with several frames (an animated GIF, APNG or WebP): read as a video."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return getattr(im, "n_frames", 1) > 1
    except Exception:  # noqa: BLE001 - unreadable: the image reader reports it
        return False


def open_video(path: str | os.PathLike) -> _AVSource | _ImageSource:
    """Open a video (or still image) for reading; raises VideoDecodeError naming the file and cause."""
    shown = str(path)
    p = check_readable(path)
    if p.suffix.lower() in IMAGE_SUFFIXES and not _is_animated(p):
        return _ImageSource(p, shown)
    try:
        return _AVSource(p, shown)
    except VideoDecodeError:
        raise
    except av.error.FFmpegError as exc:
        raise _open_error(shown, exc) from None


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read a file's VideoInfo without decoding more than its first frame."""
    src = open_video(path)
    try:
        return src.info
    finally:
        src.close()


def decode_frames_at(
    path: str | os.PathLike,
    times: Sequence[float],
    transform: Callable[[np.ndarray], T] | None = None,
) -> tuple[list, list[float], VideoInfo]:
    """Frames displayed at `times` (seconds) as upright RGB uint8 arrays (or `transform` of them)."""
    src = open_video(path)
    try:
        frames, stamps = src.frames_at(list(times), transform or (lambda a: a))
        return frames, stamps, src.info
    finally:
        src.close()


def decode_all(path: str | os.PathLike) -> Iterator[tuple[float, np.ndarray]]:
    """Every frame of the file with its time, by plain sequential decoding (the reference)."""
    src = open_video(path)
    try:
        yield from src.iter_frames()
    finally:
        src.close()
