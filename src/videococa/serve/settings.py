"""How a server runs: one dataclass, filled from CLI flags or the VIDEOCOCA_* environment variables of the same names."""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..cache import cache_root
from ..errors import OptionError

LOOPBACK_NAMES = ("localhost", "localhost.localdomain")


@dataclass
class ServeSettings:
    """Settings of one `videococa serve` process."""

    library: Path | None = None
    """The library root: the only folder whose indexed files are ever read or served."""
    index: Path | None = None
    """The index directory."""
    host: str = "127.0.0.1"
    """Address to bind; anything but loopback needs an API key (or no_auth)."""
    port: int = 8000
    """TCP port."""
    api_key: str | None = None
    """Key a client must send (`Authorization: Bearer KEY`, `X-API-Key`, or the cookie set by /api/login)."""
    no_auth: bool = False
    """Serve a non-loopback address without a key (the operator's explicit choice)."""
    read_only: bool = False
    """Refuse every mutation (upload, rescan, delete)."""
    cors_origins: list[str] = field(default_factory=list)
    """Origins allowed to call the API from other sites (none: CORS off)."""
    max_upload_bytes: int = 2 << 30
    """Largest accepted upload (413 above)."""
    cache_dir: Path | None = None
    """Thumbnails, previews and upload staging (default: a folder per index in the user's cache; never inside
    the library)."""
    scan_on_start: bool = True
    """Bring the index up to date with the library when the server starts (a background job)."""
    upload_dir: str = "uploads"
    """Folder under the library root where uploads are stored."""

    def __post_init__(self) -> None:
        if self.library is not None:
            self.library = Path(os.path.abspath(self.library))
        if self.index is not None:
            self.index = Path(os.path.abspath(self.index))
        if self.cache_dir is None and self.index is not None:
            # outside the library and the index: a rescan must never find cached previews (.webm) as videos
            tag = hashlib.sha256(str(self.index).encode()).hexdigest()[:16]
            self.cache_dir = cache_root() / "serve-cache" / tag
        if self.library is not None and self.cache_dir is not None:
            lib, cache = os.path.realpath(self.library), os.path.realpath(self.cache_dir)
            if cache == lib or cache.startswith(lib.rstrip(os.sep) + os.sep):
                raise OptionError(f"the media cache {str(self.cache_dir)!r} lies inside the library: its previews "
                                  "would be indexed as videos; choose a cache folder outside it")
        if not 0 <= int(self.port) <= 65535:
            raise OptionError(f"port must be from 0 to 65535, got {self.port}")
        if self.api_key is not None and len(self.api_key) < 16:
            raise OptionError("the API key must be at least 16 characters (e.g. `python -c 'import secrets; "
                              "print(secrets.token_urlsafe(24))'`)")
        if not is_loopback(self.host) and self.api_key is None and not self.no_auth:
            raise OptionError(f"binding {self.host!r} exposes the library to the network: give --api-key KEY "
                              "(or VIDEOCOCA_API_KEY), or --no-auth to serve it without one on purpose")
        if self.max_upload_bytes < 1:
            raise OptionError(f"max upload size must be positive, got {self.max_upload_bytes}")

    @property
    def auth(self) -> bool:
        return self.api_key is not None


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
