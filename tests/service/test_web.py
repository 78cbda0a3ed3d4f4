"""What a browser gets: security headers everywhere, API docs from installed files, CORS only when
an operator allows an origin."""

from __future__ import annotations

import os
import re

import pytest

from gpujobs.service.web import CONTENT_SECURITY_POLICY

CHROMIUM = "/usr/bin/chromium"


def _assets(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


def test_pages_and_answers_carry_the_security_headers(world) -> None:
    service = world.start_in_process()
    alice = service.client(world.hub.add_user("alice"))
    anonymous = service.client(None)
    for response in (
        anonymous.get(""),
        anonymous.get("docs"),
        anonymous.get("api/k8s/jobs"),  # a 401
        alice.get("api/k8s/jobs"),
        anonymous.get("static/gpujobs.css"),
    ):
        headers = response.headers
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY, response.url
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "unsafe-inline" not in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"


def test_the_docs_and_landing_page_load_everything_from_the_service_itself(world) -> None:
    service = world.start_in_process()
    http = service.client(None)
    session = {"Cookie": "gpujobs-session=any"}  # the dashboard is served once logged in (the API checks it)
    for page in ("", "docs"):
        html = http.get(page, headers=session).text
        assert "<script>" not in html and "<style>" not in html, page  # nothing inline (the CSP forbids it)
        assets = _assets(html)
        assert assets, page
        for asset in assets:
            assert "://" not in asset, asset  # no CDN
            if asset.startswith("static/"):
                answer = http.get(asset)
                assert answer.status_code == 200 and answer.content, asset
    assert "SwaggerUIBundle" in http.get("static/swagger-ui/swagger-ui-bundle.js").text
    assert http.get("openapi.json").json()["info"]["title"] == "gpujobs"


def test_docs_can_be_turned_off(world) -> None:
    service = world.start_in_process(env={"GPUJOBS_API_DOCS": "false"})
    answer = service.client(None).get("docs")
    assert answer.status_code == 404 and "api_docs" in answer.json()["message"]


def test_cors_is_off_by_default_and_allows_only_the_listed_origins(world) -> None:
    plain = world.start_in_process()
    preflight = {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"}
    answer = plain.client(None).options("api/k8s/submit-job", headers=preflight)
    assert "access-control-allow-origin" not in answer.headers

    allowing = world.start_in_process(
        env={"GPUJOBS_CORS_ORIGINS": "https://dash.example"}, data_dir=world.root / "data-cors"
    )
    http = allowing.client(None)
    allowed = http.options(
        "api/k8s/submit-job",
        headers={
            **preflight,
            "Origin": "https://dash.example",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://dash.example"
    refused = http.options("api/k8s/submit-job", headers=preflight)
    assert "access-control-allow-origin" not in refused.headers


def test_the_docs_render_in_a_browser_under_the_policy(world) -> None:
    """Swagger UI really starts with scripts and styles only from the service (chromium, headless)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    service = world.start()
    complaints: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on(
                "console",
                lambda message: complaints.append(message.text) if message.type == "error" else None,
            )
            page.goto(f"{service.url}docs")
            page.wait_for_selector(".opblock-summary-path", timeout=30_000)
            paths = page.locator(".opblock-summary-path").all_inner_texts()
        finally:
            browser.close()
    assert any("/api/k8s/gpu-status" in path for path in paths), paths
    assert not [c for c in complaints if "Content Security Policy" in c], complaints
