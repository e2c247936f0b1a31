"""The ASGI app: `create_app(index, model, settings)`. Routes validate, call the Library, and shape JSON;
middleware adds the API key check, security headers and metrics; every error is JSON without a trace."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import IndexStoreError, OptionError, VideoCoCaError, VideoDecodeError
from ..index import VideoIndex
from ..models.videococa import VideoCoCa
from ..version import __version__
from .auth import authorised, needs_key
from .library import Forbidden, Library, NotFound
from .metrics import Metrics
from .routes import router
from .settings import ServeSettings

log = logging.getLogger("videococa.serve")
UI_DIR = Path(__file__).parent / "ui"
CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; style-src 'self'; "
       "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def create_app(index: VideoIndex, model: VideoCoCa, settings: ServeSettings, *, start_jobs: bool = True) -> FastAPI:
    """The service over one opened index and its model (tests run it in-process; `videococa serve` under uvicorn)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if start_jobs and settings.scan_on_start and settings.library and not settings.read_only:
            app.state.library.start_update()
        yield
        app.state.library.close()

    app = FastAPI(title="videococa", version=__version__, lifespan=lifespan,
                  description="Search, browse, caption and ask about the videos of one library.")
    app.state.library = Library(index, model, settings)
    app.state.settings = settings
    app.state.metrics = Metrics(app.state.library)
    app.include_router(router)
    _errors(app)
    _middleware(app, settings)
    app.mount("/", StaticFiles(directory=UI_DIR, html=True), name="ui")
    return app


def _json_error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "invalid request: " + "; ".join(parts)


def _errors(app: FastAPI) -> None:
    statuses = ((NotFound, 404), (Forbidden, 403), (VideoDecodeError, 422), (OptionError, 400),
                (IndexStoreError, 503), (VideoCoCaError, 400))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _json_error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return _json_error(422, _validation_message(exc))

    @app.exception_handler(VideoCoCaError)
    async def ours(request: Request, exc: VideoCoCaError):
        status = next(code for cls, code in statuses if isinstance(exc, cls))
        return _json_error(status, str(exc))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return _json_error(500, "internal server error; the server log has the details")


def _middleware(app: FastAPI, settings: ServeSettings) -> None:
    @app.middleware("http")
    async def guard(request: Request, call_next):
        t0 = time.perf_counter()
        path = request.url.path
        if settings.auth and needs_key(path) and not authorised(request, settings.api_key):
            response = _json_error(401, "missing or wrong API key: send `Authorization: Bearer KEY` or "
                                        "`X-API-Key: KEY`, or log in at /api/login",
                                   {"WWW-Authenticate": 'Bearer realm="videococa"'})
        else:
            try:
                response = await call_next(request)
            except Exception as exc:  # noqa: BLE001 - an error raised past the handlers: still JSON, no trace
                log.error("internal error on %s %s", request.method, path, exc_info=exc)
                response = _json_error(500, "internal server error; the server log has the details")
        _secure(response, path)
        route = request.scope.get("route")
        app.state.metrics.observe(request.method, getattr(route, "path", "other"), response.status_code,
                                  time.perf_counter() - t0)
        return response

    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])


def _secure(response: Response, path: str) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if not path.startswith(("/docs", "/redoc")):  # the OpenAPI pages load their scripts from a CDN
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Frame-Options", "DENY")
