"""What a browser gets: security headers on every answer, the pages' assets from files installed with
gpujobs (no CDN: the docs work on an offline cluster), and CORS only for the origins an operator lists.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Settings

STATIC = Path(__file__).with_name("static")

# Scripts and styles only from the service itself (no inline script anywhere), nothing framed, nothing
# sent elsewhere.  Swagger UI sets element styles from script, which style-src does not govern.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class SecurityHeaders:
    """Adds ``SECURITY_HEADERS`` to every HTTP answer (a plain ASGI middleware: streamed answers, the
    log follower's included, pass through untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def swagger_ui_folder() -> Path | None:
    """Swagger UI 5's files, as the fastapi-offline package installs them (we use only its files)."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    return Path(fastapi_offline.__file__).with_name("static")


def add_web(app: FastAPI, settings: Settings, prefix: str) -> None:
    """Static assets under ``<prefix>/static/``, the security headers, and CORS when configured."""
    swagger = swagger_ui_folder()
    if settings.api_docs and swagger is not None:
        app.mount(f"{prefix}/static/swagger-ui", StaticFiles(directory=swagger), name="swagger-ui")
    app.mount(f"{prefix}/static", StaticFiles(directory=STATIC), name="static")
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            max_age=600,
        )
    app.add_middleware(SecurityHeaders)
