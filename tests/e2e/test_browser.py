"""A person's view: log in with a browser, open JupyterLab, run the panel, see GPUs and a finished job.

Playwright drives Debian's chromium (``/usr/bin/chromium``; never a downloaded browser).  The screenshot
is saved to ``screenshots/jupyterlab-panel.png`` for people to look at.
"""

from __future__ import annotations

import json

import httpx
import pytest
from chromium import AVAILABLE, SCREENSHOTS, launch
from hubprocess import Hub

from helpers import wait_for

pytestmark = pytest.mark.e2e
if not AVAILABLE:
    pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

PANEL_NOTEBOOK = {
    "cells": [
        {
            "cell_type": "code",
            "execution_count": None,
            "metadata": {},
            "outputs": [],
            "source": "from gpujobs.widgets import Panel\npanel = Panel()\npanel",
        },
    ],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}


def test_login_open_jupyterlab_and_see_the_panel(hub: Hub, admin: httpx.Client) -> None:
    home = hub.data_dir / "home" / "frank"
    home.mkdir(parents=True, exist_ok=True)
    (home / "panel.ipynb").write_text(json.dumps(PANEL_NOTEBOOK))
    hub.login("frank")  # creates the user, so that a token can be made for the finished job below
    token = admin.post("/users/frank/tokens", json={"scopes": ["access:services!service=gpujobs"]}).json()[
        "token"
    ]
    service = httpx.Client(
        base_url=f"{hub.url}/services/gpujobs/", headers={"Authorization": f"token {token}"}
    )
    job = service.post(
        "api/k8s/submit-job", json={"name": "finished-before", "script": "print('done')", "gpu_count": 1}
    ).json()["data"]
    wait_for(
        lambda: service.get(f"api/k8s/job/{job['job_id']}/status").json()["data"]["status"] == "completed",
        what="the job to finish",
    )

    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            run_the_panel(page, hub)
        except Exception:
            SCREENSHOTS.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "failure.png"), full_page=True)
            raise
        SCREENSHOTS.mkdir(exist_ok=True)
        shot = SCREENSHOTS / "jupyterlab-panel.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 20_000


def run_the_panel(page, hub: Hub) -> None:
    page.goto(f"{hub.url}/hub/login")
    page.fill("input[name=username]", "frank")
    page.fill("input[name=password]", hub.password)
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url("**/user/frank/lab**", timeout=120_000)
    page.goto(f"{hub.url}/user/frank/lab/tree/panel.ipynb")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    # Run only once the kernel is connected and idle (the status bar says so).
    page.wait_for_selector(".jp-StatusBar-Widget >> text=Idle", timeout=120_000)
    page.click(".jp-Notebook .jp-Cell .jp-InputArea-editor")
    page.keyboard.press("Shift+Enter")
    page.wait_for_selector("text=GPUs free", timeout=60_000)
    page.click("text=My jobs")
    page.wait_for_selector("text=finished-before", timeout=60_000)
    page.wait_for_selector(".widget-html >> text=completed", timeout=60_000)
