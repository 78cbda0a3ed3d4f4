"""Who is calling: a JupyterHub token, checked against the hub's API and cached for a while (or,
without a hub, the one local user's token: ``LocalAuthenticator``).

Like JupyterHub's own ``HubAuth``: the caller's token goes to ``GET {hub}/user`` and the answer (the
user model with the token's scopes) is cached under a hash of the token.  Tokens are read from the
``Authorization`` header only (never the URL, where they would end up in logs) and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from jupyterhub.services.auth import check_scopes

from ..config import Settings
from ..errors import DependencyUnavailable, Forbidden, NotAuthenticated
from ..localaccess import LocalAccess, local_proof

log = logging.getLogger(__name__)
_MAX_CACHED = 10_000


@dataclass(frozen=True)
class HubUser:
    name: str
    admin: bool = False
    groups: tuple[str, ...] = ()
    scopes: frozenset[str] = field(default_factory=frozenset)


MAX_TOKEN_LENGTH = 4096  # JupyterHub's tokens are 32 characters; its API refuses huge headers


def token_from_header(value: str | None) -> str:
    """The token in ``Authorization: token X`` or ``Authorization: Bearer X``."""
    if not value:
        raise NotAuthenticated("no token: send 'Authorization: token <your JupyterHub API token>'")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() not in ("token", "bearer") or not token.strip():
        raise NotAuthenticated("the Authorization header must be 'token <token>' or 'Bearer <token>'")
    if len(token) > MAX_TOKEN_LENGTH:  # not one the hub gave out; not worth asking it
        raise NotAuthenticated("the token is not a JupyterHub token (too long)")
    return token.strip()


class Authenticator(Protocol):
    async def user_for_token(self, token: str) -> HubUser: ...


class LocalAuthenticator:
    """Single-machine mode (no hub): one user, whose token the service keeps in its data dir."""

    def __init__(self, access: LocalAccess, access_file: Path, settings: Settings) -> None:
        self._token = access.token.encode()
        self._user = HubUser(
            name=access.user,
            admin=True,  # the machine's one user sees and may cancel everything on it
            scopes=frozenset({f"access:services!service={settings.service_name}"}),
        )
        self._where = access_file

    def proof(self, nonce: str) -> str:
        return local_proof(self._token.decode(), nonce)

    async def user_for_token(self, token: str) -> HubUser:
        if hmac.compare_digest(token.encode(), self._token):
            return self._user
        raise NotAuthenticated(
            f"this gpujobs runs without a hub and takes only the token kept in {self._where} "
            "(the gpujobs CLI and the Python client read it there by themselves)"
        )


class HubAuthenticator:
    def __init__(self, settings: Settings, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.client = client
        self.required_scope = f"access:services!service={settings.service_name}"
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    async def user_for_token(self, token: str) -> HubUser:
        model = await self._model(token)
        if model.get("kind", "user") != "user":
            raise Forbidden(f"gpujobs accepts user tokens only; this one belongs to a {model.get('kind')}")
        scopes = frozenset(model.get("scopes") or ())
        if not check_scopes(self.required_scope, set(scopes)):
            raise Forbidden(
                f"this token lacks the scope {self.required_scope!r}; ask your hub admin to grant it "
                "(a user server's token needs it in c.Spawner.server_token_scopes)"
            )
        groups = tuple(model.get("groups") or ())
        admin = bool(model.get("admin"))
        is_admin = (
            admin
            or model["name"] in self.settings.admin_users
            or bool(set(groups) & set(self.settings.admin_groups))
        )
        return HubUser(name=model["name"], admin=is_admin, groups=groups, scopes=scopes)

    async def token_for_code(self, code: str) -> str:
        """The hub's OAuth token for a login's ``code`` (the dashboard's login; like HubOAuth's)."""
        if not self.settings.hub_api_url or self.settings.hub_api_token is None:
            raise DependencyUnavailable(
                "no JupyterHub API is configured: the dashboard needs a hub to log in"
            )
        form = {
            "client_id": self.settings.client_id,
            "client_secret": self.settings.hub_api_token.get_secret_value(),
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.settings.callback_url,
        }
        try:
            response = await self.client.post(
                f"{self.settings.hub_api_url.rstrip('/')}/oauth2/token", data=form
            )
        except httpx.HTTPError as exc:
            log.warning("JupyterHub API unreachable: %s", exc.__class__.__name__)
            raise DependencyUnavailable("JupyterHub did not answer; try again in a moment") from None
        if response.status_code in (400, 401, 403):
            raise NotAuthenticated("the hub did not accept this login (it expired, or was used already)")
        try:
            token = response.json().get("access_token") if response.status_code == 200 else None
        except ValueError:
            token = None
        if not isinstance(token, str) or not token:
            raise DependencyUnavailable(f"JupyterHub answered {response.status_code} without a token")
        return token

    async def _model(self, token: str) -> dict[str, Any]:
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached and cached[0] > now:
            return cached[1]
        model = await self._ask_hub(token)
        if "groups" not in model or "admin" not in model:
            model = {**model, **await self._lookup_user(model["name"])}
        if len(self._cache) >= _MAX_CACHED:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
        self._cache[key] = (now + self.settings.auth_cache_seconds, model)
        return model

    async def _ask_hub(self, token: str) -> dict[str, Any]:
        if not self.settings.hub_api_url:
            raise DependencyUnavailable("no JupyterHub API is configured (JUPYTERHUB_API_URL)")
        try:
            response = await self.client.get(
                f"{self.settings.hub_api_url.rstrip('/')}/user", headers={"Authorization": f"token {token}"}
            )
        except httpx.HTTPError as exc:
            log.warning("JupyterHub API unreachable: %s", exc.__class__.__name__)
            raise DependencyUnavailable("JupyterHub did not answer; try again in a moment") from None
        if response.status_code in (401, 403):
            raise NotAuthenticated("the hub does not accept this token (expired or revoked?)")
        if response.status_code != 200:
            raise DependencyUnavailable(f"JupyterHub answered {response.status_code}; try again in a moment")
        try:
            model = response.json()
        except ValueError:
            model = None
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            # A proxy's login page, a hub half up: not an identity, and not the caller's fault.
            log.warning(
                "JupyterHub's /user answer is not a user model (%s)", response.headers.get("content-type")
            )
            raise DependencyUnavailable(
                "JupyterHub answered something that is not a user; try again in a moment"
            )
        return model

    async def _lookup_user(self, name: str) -> dict[str, Any]:
        """Groups and admin flag with the service's own token, when the user's token may not read them."""
        token = self.settings.hub_api_token
        if token is None:
            return {}
        try:
            response = await self.client.get(
                f"{(self.settings.hub_api_url or '').rstrip('/')}/users/{quote(name, safe='')}",
                headers={"Authorization": f"token {token.get_secret_value()}"},
            )
        except httpx.HTTPError:
            return {}
        if response.status_code != 200:
            return {}
        try:
            body = response.json()
        except ValueError:
            return {}
        return (
            {key: body[key] for key in ("groups", "admin") if key in body} if isinstance(body, dict) else {}
        )
