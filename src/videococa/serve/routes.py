"""The JSON API. Each route validates its input, calls the Library (off the event loop), and shapes JSON."""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..errors import OptionError, VideoDecodeError
from ..index import SearchHit, VideoRecord
from ..paths import shorten
from ..video.decode import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from ..version import __version__
from . import media
from .auth import COOKIE, key_matches, session_token
from .library import Library, NotFound, decode_cursor, encode_cursor
from .metrics import CONTENT_TYPE
from .models import AskRequest, CaptionRequest, ClassifyRequest, Filters, SearchRequest

router = APIRouter()
UPLOAD_SLACK = 64 * 1024
"""Bytes of multipart framing allowed on top of the upload limit."""


class TooLarge(Exception):
    """The request body passed the upload limit."""


def _lib(request: Request) -> Library:
    return request.app.state.library


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


# ---------------------------------------------------------------------- shaping
@functools.lru_cache(maxsize=4096)
def _playable(path: str, size: int, mtime_ns: int) -> bool:
    try:
        return media.browser_playable(path)
    except Exception:  # noqa: BLE001 - an unreadable file is simply not playable
        return False


def _urls(video_id: int, start: float, end: float) -> dict:
    mid = round((start + end) / 2, 2)
    return {"thumbnail_url": f"/api/videos/{video_id}/thumbnail?t={mid}",
            "stream_url": f"/api/videos/{video_id}/stream",
            "preview_url": f"/api/videos/{video_id}/preview.webm?start={round(start, 3)}&end={round(end, 3)}"}


def _hit(lib: Library, h: SearchHit) -> dict:
    st = os.stat(h.path)
    return {"entry_id": h.entry_id, "video_id": h.video_id, "path": lib.rel(h.path), "start": round(h.start, 3),
            "end": round(h.end, 3), "score": round(h.score, 6), "caption": h.caption,
            "caption_match": h.caption_match, "playable": _playable(h.path, st.st_size, st.st_mtime_ns),
            **_urls(h.video_id, h.start, h.end)}


def _video(lib: Library, v: VideoRecord) -> dict:
    real = lib.served(v.path)
    playable = bool(real) and os.path.isfile(real) and _playable(real, v.size, v.mtime_ns)
    return {"id": v.id, "path": lib.rel(v.path), "size": v.size, "modified": v.mtime_ns / 1e9,
            "duration": round(v.duration, 3), "entries": v.entries, "indexed_at": v.indexed_at,
            "playable": playable, **_urls(v.id, 0.0, v.duration), "thumbnail_url":
            f"/api/videos/{v.id}/thumbnail?t={round(min(1.0, v.duration / 2), 2)}"}


# ---------------------------------------------------------------------- status
@router.get("/api/health")
def health() -> dict:
    return {"status": "ok", "version": __version__}


@router.post("/api/login")
def login(request: Request, key: Annotated[str, Body(embed=True, max_length=512)]) -> Response:
    """Trade the API key for an HttpOnly session cookie (what the web UI uses for images and video)."""
    settings = request.app.state.settings
    if not settings.auth:
        return JSONResponse({"ok": True, "auth": False})
    if not key_matches(key, settings.api_key):
        return _error(401, "wrong API key")
    response = JSONResponse({"ok": True, "auth": True})
    response.set_cookie(COOKIE, session_token(settings.api_key), httponly=True, samesite="strict", path="/")
    return response


@router.get("/api/stats")
def stats(request: Request) -> dict:
    return _lib(request).stats()


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)


# ---------------------------------------------------------------------- search
async def _search_input(request: Request) -> tuple[dict, UploadFile | None]:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=4)
        upload = form.get("file")
        try:
            options = json.loads(form.get("options") or "{}")
        except json.JSONDecodeError as exc:
            raise OptionError(f"the 'options' form field is not JSON: {exc}") from None
        if not isinstance(upload, UploadFile):
            raise OptionError("a multipart search needs a 'file' field holding an image or a video clip")
        return options, upload
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise OptionError("the request body is not JSON (send a JSON object, or multipart with a file)") from None
    if not isinstance(body, dict):
        raise OptionError("the request body must be a JSON object")
    return body, None


def _validate(model, data: dict):
    """A request body read by hand (JSON or multipart) checked like FastAPI checks declared bodies (422)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def _query_file(upload: UploadFile, folder: Path) -> str:
    """The uploaded query image or clip, saved under a name of our own (only its known suffix is kept)."""
    suffix = Path(upload.filename or "").suffix.lower()
    if suffix not in VIDEO_SUFFIXES and suffix not in IMAGE_SUFFIXES:
        raise OptionError(f"query file {shorten(upload.filename or '')!r}: not an image or video file name (allowed: "
                          f"{', '.join(sorted({*IMAGE_SUFFIXES, *VIDEO_SUFFIXES}))})")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=suffix)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(upload.file, out)
    return tmp


def _run_search(lib: Library, req: SearchRequest, upload: UploadFile | None) -> dict:
    if upload is None and req.text is None and req.entry_id is None:
        raise OptionError("give text, entry_id, or upload a file to search by")
    key = req.model_dump(exclude={"cursor"})
    offset = decode_cursor(req.cursor, key)
    tmp = _query_file(upload, lib.cache.root / "queries") if upload is not None else None
    try:
        q = lib.embed_query(text=req.text, entry_id=req.entry_id, upload=tmp)
    finally:
        if tmp:
            os.unlink(tmp)
    f = req.filters
    where = lib.root_filter(f.path_prefix, f.path_glob, min_duration=f.min_duration, max_duration=f.max_duration,
                            modified_after=f.modified_after, modified_before=f.modified_before)
    hits, more = lib.search(q, text=req.text, top_k=req.top_k, offset=offset, group_by=req.group_by,
                            min_score=req.min_score, where=where, hybrid=req.hybrid,
                            exclude=[req.entry_id] if req.entry_id else [])
    # the filter kept every file outside the library root out (lib.outside), so each hit may be shown
    return {"hits": [_hit(lib, h) for h in hits],
            "next_cursor": encode_cursor(offset + req.top_k, key) if more else None}


@router.post("/api/search", openapi_extra={"requestBody": {"content": {
    "application/json": {"schema": SearchRequest.model_json_schema()},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "string", "format": "binary"},
        "options": {"type": "string", "description": "SearchRequest as JSON"}}}}}}})
async def search(request: Request) -> dict:
    """Search by `text`, by `entry_id` (more like this), or by an uploaded image or clip (multipart `file`)."""
    options, upload = await _search_input(request)
    req = _validate(SearchRequest, options)
    return await run_in_threadpool(_run_search, _lib(request), req, upload)


# ---------------------------------------------------------------------- videos
@router.get("/api/videos")
def list_videos(request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 50, cursor: str | None = None,
                path_prefix: str | None = None) -> dict:
    lib = _lib(request)
    key = {"limit": limit, "path_prefix": path_prefix}
    offset = decode_cursor(cursor, key)
    with lib.reading() as index:
        videos, total = index.videos(offset=offset, limit=limit, where=lib.root_filter(path_prefix))
    more = offset + len(videos) < total
    return {"videos": [_video(lib, v) for v in videos], "total": total,
            "next_cursor": encode_cursor(offset + limit, key) if more else None}


@router.get("/api/videos/{video_id}")
def get_video(request: Request, video_id: int) -> dict:
    lib = _lib(request)
    rec, _ = lib.video(video_id)
    with lib.reading() as index:
        segments = index.segments(video_id)
    return {**_video(lib, rec), "segments": [
        {"entry_id": s.entry_id, "start": round(s.start, 3), "end": round(s.end, 3), "caption": s.caption,
         **({"frame_times": [round(t, 3) for t in s.frame_times]} if s.frame_times is not None else {}),
         **_urls(video_id, s.start, s.end)} for s in segments]}


def _cached_file(request: Request, path: Path, etag: str, media_type: str) -> Response:
    headers = {"ETag": etag, "Cache-Control": "private, max-age=3600"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return FileResponse(path, media_type=media_type, headers=headers)


@router.get("/api/videos/{video_id}/thumbnail")
def thumbnail(request: Request, video_id: int, t: Annotated[float, Query(ge=0)] = 0.0,
              width: Annotated[int, Query(ge=16, le=1280)] = 320) -> Response:
    """A JPEG of the frame shown at `t` seconds (cached; ETag / If-None-Match)."""
    lib = _lib(request)
    _, real = lib.video(video_id)
    thumb = media.thumbnail(lib.cache, real, t, width=width)
    return _cached_file(request, thumb.path, thumb.etag, "image/jpeg")


@router.get("/api/videos/{video_id}/stream")
def stream(request: Request, video_id: int) -> Response:
    """The original file, with HTTP Range support (206) so a player can seek."""
    _, real = _lib(request).video(video_id)
    return FileResponse(real, media_type=media.media_type(real), headers={"Cache-Control": "private, max-age=60"},
                        content_disposition_type="inline")


@router.get("/api/videos/{video_id}/preview.webm")
def preview(request: Request, video_id: int, start: Annotated[float, Query(ge=0)] = 0.0,
            end: Annotated[float | None, Query(ge=0)] = None) -> Response:
    """The moment [start, end] as VP9/WebM, for files the browser cannot play (cached)."""
    lib = _lib(request)
    rec, real = lib.video(video_id)
    path = media.preview(lib.cache, real, start, rec.duration if end is None else end)
    st = path.stat()
    return _cached_file(request, path, f'"{path.stem}-{st.st_size}"', "video/webm")


# ---------------------------------------------------------------------- model calls
@router.post("/api/videos/{video_id}/caption")
def caption(request: Request, video_id: int, body: CaptionRequest | None = None) -> dict:
    body = body or CaptionRequest()
    lib = _lib(request)
    _, real = lib.video(video_id)
    text = lib.caption(real, body.start, body.end, method=body.method, max_len=body.max_len)
    return {"video_id": video_id, "start": body.start, "end": body.end, "caption": text}


@router.post("/api/videos/{video_id}/ask")
def ask(request: Request, video_id: int, body: AskRequest) -> dict:
    lib = _lib(request)
    _, real = lib.video(video_id)
    return {"video_id": video_id, "question": body.question, "start": body.start, "end": body.end,
            "answer": lib.ask(real, body.question, body.start, body.end)}


@router.post("/api/classify")
async def classify(request: Request) -> dict:
    """Zero-shot classes of an indexed entry (`entry_id`) or an uploaded clip (multipart `file` + `options`)."""
    options, upload = await _search_input(request)
    req = _validate(ClassifyRequest, options)
    return await run_in_threadpool(_run_classify, _lib(request), req, upload)


def _run_classify(lib: Library, req: ClassifyRequest, upload: UploadFile | None) -> dict:
    if (req.entry_id is None) == (upload is None):
        raise OptionError("give entry_id or upload a file to classify (one of them)")
    tmp = _query_file(upload, lib.cache.root / "queries") if upload is not None else None
    try:
        q = lib.embed_query(entry_id=req.entry_id, upload=tmp)
    finally:
        if tmp:
            os.unlink(tmp)
    labels = req.label_set if req.label_set is not None else req.labels
    return {"entry_id": req.entry_id, "predictions": lib.classify(labels, q, req.top_k)}


# ---------------------------------------------------------------------- ingest and jobs
def _job(job) -> JSONResponse:
    return JSONResponse({"job": job.public(), "job_url": f"/api/jobs/{job.id}"}, status_code=202)


@router.post("/api/index/update", status_code=202)
def update_index(request: Request) -> JSONResponse:
    """Rescan the library: new and changed files are embedded, deleted ones dropped (a background job)."""
    return _job(_lib(request).start_update())


@router.delete("/api/videos/{video_id}", status_code=202)
def delete_video(request: Request, video_id: int) -> JSONResponse:
    """Remove a video from the index and delete its file (a background job)."""
    return _job(_lib(request).start_delete(video_id))


async def _receive_upload(request: Request, limit: int) -> UploadFile:
    size = request.headers.get("content-length")
    if size and size.isdigit() and int(size) > limit + UPLOAD_SLACK:
        raise TooLarge
    received = 0

    async def counting():
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit + UPLOAD_SLACK:
            raise TooLarge
        return message

    form = await Request(request.scope, counting).form(max_files=1, max_fields=2)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise OptionError("send the video as a multipart form field named 'file'")
    return upload


@router.post("/api/videos", status_code=202, openapi_extra={"requestBody": {"content": {"multipart/form-data": {
    "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}}}}})
async def upload_video(request: Request) -> JSONResponse:
    """Upload a video into the library (LIBRARY/uploads) and index it (a background job)."""
    lib = _lib(request)
    lib.writable()
    limit = lib.settings.max_upload_bytes
    try:
        upload = await _receive_upload(request, limit)
    except TooLarge:
        return _error(413, f"the upload is larger than this server's limit of {limit / 2**20:.0f} MiB")
    try:
        dest = await run_in_threadpool(_store_upload, lib, upload, limit)
    except VideoDecodeError as exc:
        return _error(415, str(exc))
    job = lib.start_update([str(dest)], kind="upload")
    return JSONResponse({"job": job.public(), "job_url": f"/api/jobs/{job.id}", "path": lib.rel(str(dest))},
                        status_code=202)


def _store_upload(lib: Library, upload: UploadFile, limit: int) -> Path:
    name = media.safe_upload_name(upload.filename or "")
    staging = lib.cache.root / "uploads"
    staging.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=staging, suffix=Path(name).suffix)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(upload.file, out)
        if os.path.getsize(tmp) > limit:
            raise OptionError(f"the upload is larger than this server's limit of {limit / 2**20:.0f} MiB")
        media.check_upload(tmp)
        folder = Path(lib.root) / lib.settings.upload_dir
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / name
        n = 1
        while dest.exists():
            dest = folder / f"{Path(name).stem}-{n}{Path(name).suffix}"
            n += 1
        shutil.move(tmp, dest)
        return dest
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@router.get("/api/jobs")
def list_jobs(request: Request) -> dict:
    return {"jobs": [j.public() for j in _lib(request).jobs.all()]}


@router.get("/api/jobs/{job_id}")
def get_job(request: Request, job_id: str) -> dict:
    job = _lib(request).jobs.get(job_id)
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    return job.public()


@router.get("/api/jobs/{job_id}/events")
async def job_events(request: Request, job_id: str) -> StreamingResponse:
    """Server-Sent Events: a `progress` event at each change, then `end` when the job is done or failed."""
    jobs = _lib(request).jobs
    if jobs.get(job_id) is None:
        raise NotFound(f"no job {job_id!r}")

    async def events():
        version = -1
        while not await request.is_disconnected():
            job = await run_in_threadpool(jobs.wait, job_id, version, 5.0)
            if job is None:
                return
            if job.version == version:
                yield ": keep-alive\n\n"
                continue
            version = job.version
            ended = job.state in ("done", "failed")
            yield f"event: {'end' if ended else 'progress'}\ndata: {json.dumps(job.public())}\n\n"
            if ended:
                return

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
