"""A small fake of the JupyterHub API: ``GET /hub/api/user`` answers for the tokens it knows, and
``POST /hub/api/oauth2/token`` trades a login's code (``login_code``) for its token.

It is a real HTTP server (in a thread), so the service's real auth path runs against it.  Users are
added with ``add_user``; ``down()`` makes it refuse connections (to test "hub unavailable").
"""

from __future__ import annotations

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


class FakeHub:
    def __init__(self, service_name: str = "gpujobs") -> None:
        self.service_name = service_name
        self.tokens: dict[str, dict[str, Any]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.requests: list[str] = []
        self.codes: dict[str, str] = {}  # OAuth code → the token it is traded for
        self.token_requests: list[dict[str, str]] = []
        self.service_token = secrets.token_hex(16)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_GET(self) -> None:
                hub.requests.append(self.path)
                auth = self.headers.get("Authorization", "")
                token = auth.partition(" ")[2]
                if self.path == "/hub/api/user" and token in hub.tokens:
                    self._answer(200, hub.tokens[token])
                elif self.path.startswith("/hub/api/users/") and token == hub.service_token:
                    name = self.path.rsplit("/", 1)[1]
                    if name in hub.users:
                        self._answer(200, hub.users[name])
                    else:
                        self._answer(404, {"status": 404, "message": "no such user"})
                else:
                    self._answer(403, {"status": 403, "message": "invalid token"})

            def do_POST(self) -> None:
                hub.requests.append(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if self.path != "/hub/api/oauth2/token":
                    self._answer(404, {"status": 404, "message": "not found"})
                    return
                hub.token_requests.append(form)
                token = hub.codes.pop(form.get("code", ""), None)  # a code is good once
                if form.get("client_secret") != hub.service_token or token is None:
                    self._answer(400, {"error": "invalid_grant"})
                    return
                self._answer(200, {"access_token": token, "token_type": "Bearer"})

            def _answer(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hub/api"

    def add_user(
        self,
        name: str,
        *,
        admin: bool = False,
        groups: tuple[str, ...] = (),
        scopes: tuple[str, ...] | None = None,
        kind: str = "user",
        expose_groups: bool = True,
    ) -> str:
        """Register a user and return a fresh token for them."""
        token = secrets.token_hex(16)
        if scopes is None:
            scopes = (f"access:services!service={self.service_name}",)
        model: dict[str, Any] = {"kind": kind, "name": name, "scopes": list(scopes)}
        full = {**model, "admin": admin, "groups": list(groups)}
        self.users[name] = full
        self.tokens[token] = full if expose_groups else model
        return token

    def login_code(self, name: str, **user: Any) -> tuple[str, str]:
        """A browser's login as ``name`` (added as ``add_user`` does): the OAuth code the hub would
        send to the service's callback, and the token the service gets for it."""
        token = self.add_user(name, **user)
        code = secrets.token_hex(8)
        self.codes[code] = token
        return code, token

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
