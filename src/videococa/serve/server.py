"""Opening what a server serves (index + model, or the demo library) and running it under uvicorn."""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass

from ..cache import cache_root
from ..demo import write_demo_library
from ..errors import IndexStoreError, OptionError
from ..index import VideoIndex
from ..models import VideoCoCa, load_model
from ..paths import display
from .settings import ServeSettings

DEFAULT_SEGMENT = 5.0
"""Seconds per entry of an index the server creates (search returns moments)."""


@dataclass
class ModelChoice:
    """Which model to load (None: the one an existing index was built with; for a new index videococa-tiny)."""

    name: str | None = None
    pretrained: str | None = None
    precision: str | None = None
    device: str = "cpu"
    num_frames: int | None = None
    segment: float | None = None
    captions: bool | None = None


def demo_settings(**kwargs) -> ServeSettings:
    """Settings for `serve --demo`: the synthetic demo library and its index in the user's cache."""
    root = cache_root() / "serve-demo"
    write_demo_library(root / "library")
    return ServeSettings(library=root / "library", index=root / "index", **kwargs)


def open_library(settings: ServeSettings, choice: ModelChoice) -> tuple[VideoIndex, VideoCoCa]:
    """The index (opened, or created for the library) and the model it needs."""
    assert settings.index is not None
    existing = (settings.index / "index.sqlite").is_file()
    if existing:
        s = VideoIndex.recorded_settings(settings.index)
        model = load_model(choice.name or s["model"], choice.pretrained or s["pretrained"] or None,
                           device=choice.device, precision=choice.precision or s["precision"])
        return VideoIndex(settings.index, model, create=False, num_frames=choice.num_frames,
                          segment=choice.segment, captions=choice.captions), model
    if settings.library is None:
        raise IndexStoreError(f"no video index at {display(settings.index)!r}; give --library DIR to build one")
    if settings.read_only:
        raise IndexStoreError(f"no video index at {display(settings.index)!r}: a --read-only server needs an index "
                              "built already (run once without --read-only, or `videococa index`)")
    if not settings.library.is_dir():
        raise OptionError(f"library {display(settings.library)!r} is not a folder")
    model = load_model(choice.name, choice.pretrained, device=choice.device, precision=choice.precision or "auto")
    index = VideoIndex(settings.index, model, num_frames=choice.num_frames,
                       segment=choice.segment or DEFAULT_SEGMENT, captions=bool(choice.captions))
    return index, model


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one), so the URL printed is the one served."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise OptionError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    return sock


def serve(settings: ServeSettings, choice: ModelChoice) -> int:
    """Open, print the URL, and serve until Ctrl-C."""
    import uvicorn  # noqa: PLC0415 - the server's own dependency, loaded only by the command that runs one

    from .app import create_app  # noqa: PLC0415 - FastAPI loads only when a server runs

    index, model = open_library(settings, choice)
    sock = bind(settings.host, settings.port)
    port = sock.getsockname()[1]
    shown = f"[{settings.host}]" if ":" in settings.host else settings.host
    app = create_app(index, model, settings)
    print(f"videococa serve: http://{shown}:{port}/  (library {display(settings.library or '-')}, index "
          f"{display(settings.index)}, model {model.info.name}; {len(index)} entries"
          f"{'; read-only' if settings.read_only else ''}{'; API key required' if settings.auth else ''})",
          flush=True)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5, access_log=False)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the Ctrl-C it caught, after its graceful shutdown: a normal end for a server
    print("videococa serve: stopped", file=sys.stderr)
    return 0
