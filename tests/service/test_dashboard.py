"""The dashboard's page and its login through the hub (OAuth), in-process against the fake hub: the
browser's side of it is tests/e2e/test_dashboard_browser.py."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from helpers import REPO


@pytest.fixture
def service(world):
    return world.start_in_process("--simulate-gpus", "t4:2", env={"GPUJOBS_ADMIN_USERS": "root-admin"})


def login(world, service, http, name: str) -> str:
    """Through oauth_login and oauth_callback as a browser would: the session cookie's value."""
    started = http.get("oauth_login")
    state = parse_qs(urlsplit(started.headers["location"]).query)["state"][0]
    code, token = world.hub.login_code(name)
    back = http.get("oauth_callback", params={"code": code, "state": state})
    assert back.status_code == 302 and back.headers["location"] == "/"
    assert http.cookies.get("gpujobs-session") == token
    return token


def test_the_page_is_the_dashboard_served_from_the_service(world, service) -> None:
    http = service.client(None)
    first = http.get("")  # no session yet: log in through the hub first
    assert first.status_code == 302 and first.headers["location"] == "/oauth_login"
    login(world, service, http, "alice")
    page = http.get("")
    assert page.status_code == 200 and "static/dashboard.js" in page.text
    assert "content-security-policy" in page.headers and "<script>" not in page.text
    script = http.get("static/dashboard.js").text
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script  # user text is never HTML
    assert "X-Gpujobs-Dashboard" in script


def test_login_goes_through_the_hub_and_the_cookie_works_only_with_the_dashboards_header(
    world, service
) -> None:
    http = service.client(None)
    started = http.get("oauth_login")
    assert started.status_code == 302
    target = urlsplit(started.headers["location"])
    assert target.path == "/hub/api/oauth2/authorize"
    query = parse_qs(target.query)
    assert query["client_id"] == ["service-gpujobs"] and query["redirect_uri"] == ["/oauth_callback"]
    assert query["response_type"] == ["code"] and len(query["state"][0]) >= 24
    cookie = started.headers["set-cookie"].lower()
    assert "gpujobs-oauth-state=" in cookie and "httponly" in cookie and "samesite=lax" in cookie

    token = login(world, service, http, "alice")
    (asked,) = world.hub.token_requests
    assert asked["redirect_uri"] == "/oauth_callback" and asked["grant_type"] == "authorization_code"
    assert "httponly" in http.get("oauth_login").headers["set-cookie"].lower()

    me = http.get("api/k8s/whoami", headers={"X-Gpujobs-Dashboard": "1"})
    assert me.status_code == 200 and me.json()["data"] == {"name": "alice", "admin": False, "groups": []}
    # The same cookie without the header is what a forged cross-site request would carry: refused.
    forged = http.post("api/k8s/submit-job", json={"script": "print(1)"})
    assert forged.status_code == 401
    assert http.get("api/k8s/jobs").status_code == 401
    # A token in the header still wins over any cookie.
    assert service.client(token).get("api/k8s/whoami").json()["data"]["name"] == "alice"


def test_a_login_that_did_not_start_here_or_was_used_is_refused(world, service) -> None:
    http = service.client(None)
    code, _ = world.hub.login_code("alice")
    no_state = http.get("oauth_callback", params={"code": code, "state": "made-up"})
    assert no_state.status_code == 422 and no_state.json()["data"]["field"] == "state"
    started = http.get("oauth_login")
    state = parse_qs(urlsplit(started.headers["location"]).query)["state"][0]
    wrong = http.get("oauth_callback", params={"code": code, "state": state + "x"})
    assert wrong.status_code == 422
    assert http.get("oauth_callback", params={"code": code, "state": state}).status_code == 302
    replayed = http.get("oauth_callback", params={"code": code, "state": state})  # a state is good once
    assert replayed.status_code == 422
    started = http.get("oauth_login")
    state = parse_qs(urlsplit(started.headers["location"]).query)["state"][0]
    again = http.get("oauth_callback", params={"code": code, "state": state})  # so is the hub's code
    assert again.status_code == 401 and "did not accept this login" in again.json()["message"]


def test_whoami_tells_an_admin(world, service) -> None:
    http = service.client(None)
    login(world, service, http, "root-admin")
    me = http.get("api/k8s/whoami", headers={"X-Gpujobs-Dashboard": "1"}).json()["data"]
    assert me["admin"] is True


def test_logout_forgets_the_session_and_sends_the_browser_to_the_hubs_logout(world, service) -> None:
    http = service.client(None)
    login(world, service, http, "alice")
    out = http.get("logout")
    assert out.status_code == 302 and out.headers["location"] == "/hub/logout"
    assert "gpujobs-session" not in http.cookies
    assert http.get("api/k8s/whoami", headers={"X-Gpujobs-Dashboard": "1"}).status_code == 401


def test_nodes_can_be_listed_by_state(world, service) -> None:
    alice = service.client(world.hub.add_user("alice"))
    ready = alice.get("api/k8s/gpu-status", params={"state": "ready", "limit": 10}).json()["data"]
    assert [n["name"] for n in ready["gpu_nodes"]] and ready["total_gpus"] == 2
    cordoned = alice.get("api/k8s/gpu-status", params={"state": "cordoned"}).json()["data"]
    assert cordoned["gpu_nodes"] == [] and cordoned["total_gpus"] == 2
    bad = alice.get("api/k8s/gpu-status", params={"state": "gone"})
    assert bad.status_code == 422 and "state" in bad.text


def test_the_page_and_script_are_installed_with_the_package() -> None:
    package_data = (REPO / "pyproject.toml").read_text()
    assert '"service/*.html"' in package_data and '"service/static/*"' in package_data
