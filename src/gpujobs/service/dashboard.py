"""The dashboard at the service's root, and its login through the hub (OAuth, as hub services do).

The page and its script are files installed with gpujobs (``static/dashboard.*``): no CDN, so it works
on an offline cluster.  A browser that is logged in to the hub is let in without a second password:
``oauth_login`` sends it to the hub's authorize page (no confirmation for a service the admin
configured), ``oauth_callback`` trades the code for the user's hub token and keeps it in an HttpOnly
cookie scoped to the service's path.  The script never sees the token.

The cookie is accepted only on requests that carry ``X-Gpujobs-Dashboard`` (``routes.current_user``): a
page on another site cannot add that header without CORS allowing it, so it cannot act as the user
(cross-site request forgery) even though the browser would send the cookie.
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ..errors import InvalidSpec, NotFound
from .auth import HubAuthenticator
from .runtime import Runtime

SESSION_COOKIE = "gpujobs-session"
STATE_COOKIE = "gpujobs-oauth-state"
DASHBOARD_HEADER = "x-gpujobs-dashboard"
# Hub tokens from OAuth outlive a working day; the cookie is dropped sooner, and a 401 logs in again.
SESSION_SECONDS = 12 * 3600
LOGIN_SECONDS = 600  # from the hub's login page back to the callback

_PAGE = Path(__file__).with_name("dashboard.html").read_bytes()
router = APIRouter()


def _prefix(rt: Runtime) -> str:
    return rt.settings.service_prefix.rstrip("/") + "/"


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def dashboard(request: Request) -> Response:
    """The page; it asks the API for everything it shows.  A browser without a session logs in first
    (as a hub service's pages do), so that the page's first call is not a refusal; a session that has
    expired meanwhile gets a 401, and the page logs in again."""
    rt: Runtime = request.app.state.runtime
    if isinstance(rt.auth, HubAuthenticator) and not request.cookies.get(SESSION_COOKIE):
        return RedirectResponse(f"{_prefix(rt)}oauth_login", status_code=302)
    return HTMLResponse(_PAGE, headers={"Cache-Control": "no-store"})


@router.get("/oauth_login", include_in_schema=False)
async def oauth_login(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    if not isinstance(rt.auth, HubAuthenticator):
        raise NotFound("this gpujobs runs without a hub: there is no hub to log in with; use the gpujobs CLI")
    state = secrets.token_urlsafe(24)
    query = urlencode(
        {
            "client_id": rt.settings.client_id,
            "redirect_uri": rt.settings.callback_url,
            "response_type": "code",
            "state": state,
        }
    )
    answer = RedirectResponse(f"{rt.settings.authorize_url}?{query}", status_code=302)
    answer.set_cookie(
        STATE_COOKIE,
        state,
        max_age=LOGIN_SECONDS,
        path=_prefix(rt),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return answer


@router.get("/oauth_callback", include_in_schema=False)
async def oauth_callback(request: Request, code: str = "", state: str = "") -> Response:
    rt: Runtime = request.app.state.runtime
    if not isinstance(rt.auth, HubAuthenticator):
        raise NotFound("this gpujobs runs without a hub: there is no hub to log in with")
    expected = request.cookies.get(STATE_COOKIE, "")
    if not code or not state or not expected or not hmac.compare_digest(state.encode(), expected.encode()):
        raise InvalidSpec(
            "this login did not start here, or took over 10 minutes: open the dashboard again", field="state"
        )
    token = await rt.auth.token_for_code(code)
    answer = RedirectResponse(_prefix(rt), status_code=302)
    secure = request.url.scheme == "https"
    answer.delete_cookie(STATE_COOKIE, path=_prefix(rt))
    answer.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=SESSION_SECONDS,
        path=_prefix(rt),
        httponly=True,
        samesite="lax",
        secure=secure,
    )
    return answer


@router.get("/logout", include_in_schema=False)
async def logout(request: Request) -> Response:
    """Forget the session here (the hub's own login stays: the hub's logout ends that)."""
    rt: Runtime = request.app.state.runtime
    answer = RedirectResponse(f"{rt.settings.hub_host}{rt.settings.hub_base_url.rstrip('/')}/hub/logout", 302)
    answer.delete_cookie(SESSION_COOKIE, path=_prefix(rt))
    return answer
