"""Media for the service: cached thumbnails and WebM previews, upload checks, and safe file serving.

Pure functions and small classes; no web framework. Decoding is `videococa.video.decode`'s (frames displayed at
given times, upright), so a thumbnail or preview shows what the models see.

Derived files live in a `MediaCache` directory, named by a key that covers the source file's identity (real path,
size, mtime, inode) and every output parameter, so a changed source never serves a stale file. Each file is written
atomically (temp file + rename) under a per-key lock: concurrent requests make it once, and a killed process never
leaves a partial file under a final name. The cache is bounded: after each write the least recently used files go
until it fits `max_bytes`. "Used" is the access time, which every hit sets explicitly; the modification time is
left as written, so a server's mtime-based ETag of a cached file stays stable.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
import time
import unicodedata
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import numpy as np
from PIL import Image

from ..errors import OptionError, VideoDecodeError
from ..files import atomic_path, remove_stale_parts
from ..paths import display, shorten
from ..video.decode import (VIDEO_SUFFIXES, VideoInfo, _sniff, check_readable, decode_frames_at, open_video,
                            probe)

DEFAULT_MAX_BYTES = 1 << 30
"""Default bound of a MediaCache (1 GiB)."""
THUMB_WIDTHS = (16, 1280)
"""Smallest and largest thumbnail width in pixels; requests outside are clamped."""
PREVIEW_HEIGHTS = (16, 1080)
"""Smallest and largest preview height bound in pixels; requests outside are clamped."""
PREVIEW_MAX_FPS = 30
"""Previews keep the source frame rate up to this."""
JPEG_QUALITY = 85
VP9_OPTIONS = {"deadline": "realtime", "cpu-used": "8", "row-mt": "1", "crf": "34", "b": "0"}
"""libvpx-vp9 settings: realtime speed (a minute of 360p encodes in seconds on two cores), constant quality."""
_CACHE_SUFFIXES = (".jpg", ".webm")
_CHUNK = 32  # preview frames decoded per frames_at call: bounds memory to a few scaled frames


# --------------------------------------------------------------------------- the cache
_KEY_LOCKS: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
_KEY_LOCKS_GUARD = threading.Lock()


def _key_lock(name: str) -> threading.Lock:
    """One lock per cache file (across MediaCache instances): two requests for it make it once."""
    with _KEY_LOCKS_GUARD:
        lock = _KEY_LOCKS.get(name)
        if lock is None:
            lock = _KEY_LOCKS[name] = threading.Lock()
        return lock


_Identity = tuple[bytes, int, int, int]  # (real path, size, mtime_ns, inode)


class MediaCache:
    """A directory of derived media files (thumbnails, previews), bounded by size, least recently used out first."""

    def __init__(self, root: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise OptionError(f"max_bytes must be a positive number of bytes, got {max_bytes!r}")
        self.root = Path(root)
        """The cache directory (created if missing)."""
        self.max_bytes = max_bytes
        """Total size the cache is trimmed to after each write (the newest file is kept even if larger)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._infos: OrderedDict[_Identity, VideoInfo] = OrderedDict()  # probe results by source identity
        self._guard = threading.Lock()
        self._clock = 0

    # ------------------------------------------------------------------ sources
    def identity(self, path: str | os.PathLike) -> _Identity:
        """The source file's identity for cache keys; VideoDecodeError naming it if it is not a readable file."""
        check_readable(path)
        st = os.stat(path)
        return os.fsencode(os.path.realpath(path)), st.st_size, st.st_mtime_ns, st.st_ino

    def info(self, path: str | os.PathLike, *, ident: _Identity | None = None) -> VideoInfo:
        """`probe(path)`, remembered per source identity (`ident` if already known): a hit costs one stat."""
        ident = self.identity(path) if ident is None else ident
        with self._guard:
            if ident in self._infos:
                self._infos.move_to_end(ident)
                return self._infos[ident]
        info = probe(path)
        with self._guard:
            self._infos[ident] = info
            while len(self._infos) > 4096:
                self._infos.popitem(last=False)
        return info

    # ------------------------------------------------------------------ files
    def get_or_make(self, key: str, suffix: str, make: Callable[[Path], None]) -> Path:
        """The cached file for `key`, made first by `make(temp_path)` if missing (once, however many ask at once)."""
        path = self.root / f"{key}{suffix}"
        with _key_lock(str(path)):
            if path.is_file():
                self._touch(path)
                return path
            with atomic_path(path) as tmp:
                make(tmp)
            self._touch(path)
        self.evict(keep=path)
        return path

    def _touch(self, path: Path) -> None:
        """Mark `path` as just used: set its access time (strictly increasing within this process), keep its mtime."""
        with self._guard:
            self._clock = max(time.time_ns(), self._clock + 1)
            now = self._clock
        try:
            os.utime(path, ns=(now, path.stat().st_mtime_ns))
        except FileNotFoundError:
            pass  # evicted by another thread or process meanwhile

    def entries(self) -> list[tuple[int, int, Path]]:
        """(last use ns, bytes, path) of every cached file, least recently used first."""
        out = []
        with os.scandir(self.root) as it:
            for e in it:
                if e.name.endswith(_CACHE_SUFFIXES):
                    try:
                        st = e.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    out.append((st.st_atime_ns, st.st_size, Path(e.path)))
                elif e.name.endswith(".part"):
                    remove_stale_parts(self.root / e.name.rsplit(".", 2)[0])  # left by a killed process
        return sorted(out, key=lambda x: (x[0], x[2].name))

    def size(self) -> int:
        """Total bytes of the cached files."""
        return sum(n for _, n, _ in self.entries())

    def evict(self, *, keep: Path | None = None) -> list[Path]:
        """Delete least recently used files until the total fits `max_bytes` (never `keep`); returns those deleted."""
        entries = self.entries()
        total = sum(n for _, n, _ in entries)
        gone = []
        for _, n, path in entries:
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            path.unlink(missing_ok=True)
            total -= n
            gone.append(path)
        return gone


def _key(*parts: object) -> str:
    """32 hex digits naming a cache file: a hash of everything that determines its content."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def _seconds(value: float, name: str) -> float:
    """`value` as seconds, or OptionError naming `name` for a negative, NaN or infinite value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise OptionError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def _pixels(value: int, name: str, bounds: tuple[int, int]) -> int:
    """An integer pixel count clamped into `bounds`; OptionError naming `name` for a non-integer."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(f"{name} must be a whole number of pixels, got {value!r}")
    return min(max(value, bounds[0]), bounds[1])


# --------------------------------------------------------------------------- thumbnails
@dataclass(frozen=True)
class Thumb:
    """A cached JPEG thumbnail of one frame."""

    path: Path
    """The JPEG file in the cache."""
    etag: str
    """Strong ETag value, quotes included, derived from the cache key."""
    t: float
    """The time actually used (seconds): the requested time rounded to 0.1 s and clamped into the duration."""


def thumbnail(cache: MediaCache, path: str, t: float, *, width: int = 320) -> Thumb:
    """The frame displayed at `t` seconds as a JPEG `width` pixels wide (16..1280, aspect kept), cached.

    Still images and animated GIFs work too. Raises OptionError for a negative, NaN or infinite `t`, and
    VideoDecodeError naming the file when it cannot be decoded.
    """
    t = _seconds(t, "t")
    width = _pixels(width, "width", THUMB_WIDTHS)
    ident = cache.identity(path)
    info = cache.info(path, ident=ident)
    t = min(round(t, 1), info.duration)
    height = max(1, round(width * info.height / info.width))
    key = _key("thumb", ident, t, width, height)

    def make(tmp: Path) -> None:
        (img,), _, _ = decode_frames_at(path, [t], lambda rgb: Image.fromarray(rgb).resize(
            (width, height), Image.Resampling.LANCZOS, reducing_gap=2.0))
        img.save(tmp, format="JPEG", quality=JPEG_QUALITY)

    return Thumb(path=cache.get_or_make(key, ".jpg", make), etag=f'"{key}"', t=t)


# --------------------------------------------------------------------------- previews
def _even(x: float) -> int:
    return max(2, 2 * round(x / 2))


def preview(cache: MediaCache, path: str, start: float, end: float, *, max_height: int = 360,
            max_seconds: float = 60.0) -> Path:
    """[start, end] of the video as VP9 in WebM (no audio), at most `max_height` tall and `max_seconds` long, cached.

    The window is rounded to 0.1 s and clamped into the file's duration (at least one frame); a longer one is cut
    to `max_seconds` from `start`. Frames are upright (rotation applied), the frame rate is the source's capped at
    30 fps, timestamps start at 0. Raises OptionError for a bad window and VideoDecodeError naming the file.
    """
    start, end = _seconds(start, "start"), _seconds(end, "end")
    if end <= start:
        raise OptionError(f"end={end:g} must be after start={start:g}")
    if isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float)) or not max_seconds > 0 \
            or not math.isfinite(max_seconds):
        raise OptionError(f"max_seconds must be a positive number of seconds, got {max_seconds!r}")
    max_height = _pixels(max_height, "max_height", PREVIEW_HEIGHTS)
    ident = cache.identity(path)
    info = cache.info(path, ident=ident)
    fps = _output_fps(info)
    start = min(round(start, 1), max(info.duration - 1 / fps, 0.0))
    end = min(round(end, 1), start + max_seconds, info.duration)
    frames = max(1, round((end - start) * fps))
    height = _even(min(info.height, max_height))
    size = (_even(info.width * height / info.height), height)
    key = _key("preview", ident, start, frames, fps, size)
    return cache.get_or_make(key, ".webm", lambda tmp: _transcode(path, tmp, start=start, frames=frames, fps=fps,
                                                                  size=size))


def _output_fps(info: VideoInfo) -> Fraction:
    """The source's frame rate (as an exact fraction, e.g. 30000/1001) capped at 30; 25 when none is stated."""
    fps = Fraction(info.fps).limit_denominator(1001) if info.fps and info.fps > 0 else Fraction(25)
    return min(fps, Fraction(PREVIEW_MAX_FPS))


def _transcode(path: str, out_path: Path, *, start: float, frames: int, fps: Fraction, size: tuple[int, int]) -> None:
    """Encode `frames` frames, those displayed at start + k/fps, into a WebM file at `out_path`."""
    src = open_video(path)
    try:
        with av.open(str(out_path), "w", format="webm") as out:
            stream = out.add_stream("libvpx-vp9", rate=fps)
            stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
            stream.options = {**VP9_OPTIONS, "g": str(max(1, round(2 * fps)))}  # a keyframe every 2 s for seeking

            def to_yuv(rgb: np.ndarray) -> av.VideoFrame:
                return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(size[0], size[1], "yuv420p")

            for first in range(0, frames, _CHUNK):
                ks = range(first, min(frames, first + _CHUNK))
                # 0.1 ms late: a time that lands exactly on a frame's start must not round to the frame before
                chunk, _ = src.frames_at([start + float(k / fps) + 1e-4 for k in ks], to_yuv)
                for k, frame in zip(ks, chunk):
                    frame.pts = k  # a frame shown longer than 1/fps is sent again with its new time
                    for packet in stream.encode(frame):
                        out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
    finally:
        src.close()


# --------------------------------------------------------------------------- uploads
_ASF_GUID = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")


def sniff_video(path_or_head: bytes | str | os.PathLike) -> str | None:
    """The video container that a file's first bytes announce, or None for anything else (HTML, text, JSON ...).

    Kinds: 'mp4' (ISO-BMFF and QuickTime: mp4, mov, m4v, 3gp), 'webm/mkv', 'avi', 'gif', 'ogg', 'flv',
    'mpeg-ts', 'mpeg-ps', 'asf' (wmv). Given a path, reads its first 512 bytes (OSError if it cannot; None for
    anything but a regular file).
    """
    if isinstance(path_or_head, (bytes, bytearray, memoryview)):
        head = bytes(path_or_head[:512])
    elif os.path.exists(path_or_head) and not os.path.isfile(path_or_head):
        return None  # a directory, FIFO or device: never opened (opening a FIFO blocks)
    else:
        with open(path_or_head, "rb") as f:
            head = f.read(512)
    if head[4:8] == b"ftyp" or head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm/mkv"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"FLV\x01":
        return "flv"
    if len(head) > 188 and head[0] == head[188] == 0x47 or len(head) > 196 and head[4] == head[196] == 0x47:
        return "mpeg-ts"  # 188-byte packets, or 192-byte ones of M2TS (.mts)
    if head[:4] == b"\x00\x00\x01\xba":
        return "mpeg-ps"
    if head[:16] == _ASF_GUID:
        return "asf"
    return None


_OTHER_FORMATS = [  # (first bytes, what the file is) for common uploads by mistake that are not text
    (b"\x89PNG\r\n\x1a\n", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"), (b"ID3", "an MP3 audio file"), (b"fLaC", "a FLAC audio file"),
]


def _not_video(path: str | os.PathLike, head: bytes) -> str:
    """Why a file whose first bytes are `head` is refused, in plain words: ' (it looks like ...)'."""
    for magic, what in _OTHER_FORMATS:
        if head.startswith(magic):
            return f" (it looks like {what})"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return " (it looks like a WAV audio file)"
    return _sniff(Path(path)) or " (not a video format this server accepts)"  # decode's words for HTML, JSON, text


def check_upload(path: str | os.PathLike) -> str:
    """Sniff an uploaded file and probe it with PyAV; returns its container kind (see `sniff_video`).

    Raises VideoDecodeError naming the file (by its base name only) unless it is a known video container with a
    decodable video stream and at least one frame. Unknown formats are refused before FFmpeg opens them.
    """
    name = display(os.path.basename(os.fspath(path)))
    try:
        check_readable(path)
        with open(path, "rb") as f:
            head = f.read(512)
        kind = sniff_video(head)
        if kind is None:
            raise VideoDecodeError(f"{name!r} is not a video{_not_video(path, head)}")
        probe(path)
    except VideoDecodeError as exc:  # said with the base name only: the server's upload folder stays private
        raise VideoDecodeError(str(exc).replace(repr(display(path)), repr(name), 1)) from None
    return kind


_COMMON_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi")


def safe_upload_name(name: str) -> str:
    """A client-supplied file name made safe to store: its last path component, no control or format characters,
    no leading dots, at most 200 bytes of UTF-8, ending in a known video suffix (VIDEO_SUFFIXES). OptionError
    otherwise."""
    shown = shorten(display(name), 60)
    text = unicodedata.normalize("NFC", name.encode("utf-8", "ignore").decode("utf-8"))  # undecodable bytes dropped
    # control and format characters (NUL, escapes, bidi overrides that disguise a suffix) and line separators
    text = "".join(c for c in text if unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp"))
    text = re.split(r"[/\\]", text)[-1].strip().lstrip(".").strip()
    stem, suffix = os.path.splitext(text)
    if not text or not stem:
        raise OptionError(f"upload name {shown!r} is empty once made safe (no path, control characters or "
                          "leading dots)")
    if suffix.lower() not in VIDEO_SUFFIXES:
        allowed = ", ".join(_COMMON_SUFFIXES)
        raise OptionError(f"upload name {shown!r} does not end in a video suffix; allowed: {allowed}, ... "
                          f"({len(VIDEO_SUFFIXES)} in all)")
    room = 200 - len(suffix.encode())
    stem = stem.encode()[:room].decode("utf-8", "ignore").rstrip()  # cut at a character boundary
    return stem + suffix


# --------------------------------------------------------------------------- serving originals
def inside(root: str, path: str) -> str | None:
    """The real path of `path` (relative paths taken from `root`) if it lies under the real `root`, else None.

    Links are resolved first, so neither '..', a symbolic link out of the root, nor a sibling sharing a prefix
    (/lib2 for /lib) gets through.
    """
    try:
        real_root = os.path.realpath(root)
        real = os.path.realpath(os.path.join(real_root, path))
        return real if os.path.commonpath([real_root, real]) == real_root else None
    except ValueError:  # a NUL byte, or paths on different drives
        return None


_MEDIA_TYPES = {
    ".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
    ".mkv": "video/x-matroska", ".avi": "video/x-msvideo", ".ogv": "video/ogg", ".gif": "image/gif",
    ".ts": "video/mp2t", ".mts": "video/mp2t", ".mpg": "video/mpeg", ".mpeg": "video/mpeg", ".wmv": "video/x-ms-wmv",
    ".flv": "video/x-flv", ".3gp": "video/3gpp",
}


def media_type(path: str | os.PathLike) -> str:
    """The MIME type to stream the original file with, from its suffix (application/octet-stream if unknown)."""
    return _MEDIA_TYPES.get(os.path.splitext(os.fspath(path))[1].lower(), "application/octet-stream")


_PLAYABLE_CODECS = {"h264", "vp8", "vp9", "av1", "libdav1d", "libaom-av1", "libvpx", "libvpx-vp9"}
_PLAYABLE_CONTAINERS = {"mp4": (".mp4", ".m4v"), "webm/mkv": (".webm",)}


def browser_playable(path: str | os.PathLike) -> bool:
    """True when Chromium plays the file natively: H.264 (8-bit 4:2:0), VP8, VP9 or AV1 in an .mp4/.m4v or .webm.

    False for anything else, including a file that cannot be read (its preview then reports why).
    """
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    try:
        kind = sniff_video(path)
        if suffix not in _PLAYABLE_CONTAINERS.get(kind, ()):
            return False
        info = probe(path)
    except (OSError, VideoDecodeError):
        return False
    if info.codec == "h264" and info.pix_fmt not in ("yuv420p", "yuvj420p"):
        return False  # High 10 / 4:4:4 H.264 does not play in Chromium
    return info.codec in _PLAYABLE_CODECS
