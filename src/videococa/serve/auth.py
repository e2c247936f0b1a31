"""API keys: compared in constant time; the browser holds a derived session cookie, never the key itself."""

from __future__ import annotations

import hmac

from starlette.requests import Request

COOKIE = "videococa_session"
PUBLIC_API = ("/api/health", "/api/login")
"""API paths open without a key (a load balancer's probe, and the login itself)."""


def session_token(key: str) -> str:
    """The cookie value for a key: derived, so the key itself is never stored in the browser."""
    return hmac.new(key.encode(), b"videococa-session-v1", "sha256").hexdigest()


def key_matches(sent: str, key: str) -> bool:
    return bool(sent) and hmac.compare_digest(sent.encode(), key.encode())


def authorised(request: Request, key: str) -> bool:
    """True if the request carries the key (Bearer or X-API-Key header) or the session cookie."""
    sent = request.headers.get("x-api-key") or ""
    header = request.headers.get("authorization") or ""
    if header.lower().startswith("bearer "):
        sent = header[7:].strip()
    if key_matches(sent, key):
        return True
    return key_matches(request.cookies.get(COOKIE) or "", session_token(key))


def needs_key(path: str) -> bool:
    return (path.startswith("/api/") and path not in PUBLIC_API) or path == "/metrics"
