"""`videococa serve`: the HTTP API and web UI over one index (see videococa.serve.app.create_app)."""

from .app import create_app
from .settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
