"""The dashboard in a browser, through the real hub: a user logged in to the hub opens
/services/gpujobs/ and is let in without a second password (OAuth); they see the GPUs, their jobs, a
job's page with its log, and the node list; an admin also sees usage per day and downloads the CSV.
Every page is checked for console errors; screenshots go to ``screenshots/dashboard-*.png``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from chromium import AVAILABLE, SCREENSHOTS, launch
from hubprocess import Hub

from helpers import wait_for

pytestmark = pytest.mark.e2e
if not AVAILABLE:
    pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")
TIMEOUT_MS = 60_000


def service_as(hub: Hub, admin: httpx.Client, name: str) -> httpx.Client:
    hub.login(name)  # makes the user, so that a token can be made for them
    token = admin.post(f"/users/{name}/tokens", json={"scopes": ["access:services!service=gpujobs"]}).json()[
        "token"
    ]
    return httpx.Client(base_url=f"{hub.url}/services/gpujobs/", headers={"Authorization": f"token {token}"})


def finished_job(service: httpx.Client, name: str, script: str) -> str:
    job_id: str = service.post(
        "api/k8s/submit-job", json={"name": name, "script": script, "gpu_count": 1}
    ).json()["data"]["job_id"]
    wait_for(
        lambda: service.get(f"api/k8s/job/{job_id}/status").json()["data"]["status"] == "completed",
        what=f"job {name} to finish",
    )
    return job_id


def hold_both_gpus_and_wait(service: httpx.Client) -> tuple[str, str]:
    """A job running on both GPUs, and one that waits for a GPU behind it: their ids."""
    hold = {"name": "holds-the-t4s", "script": "import time; time.sleep(600)", "gpu_count": 2}
    holder: str = service.post("api/k8s/submit-job", json=hold).json()["data"]["job_id"]
    wait_for(
        lambda: service.get(f"api/k8s/job/{holder}/status").json()["data"]["status"] == "running",
        what="the job holding both GPUs to run",
    )
    wait = {"name": "waits-for-a-t4", "script": "print(1)", "gpu_count": 1, "gpu_type": "t4"}
    waiter: str = service.post("api/k8s/submit-job", json=wait).json()["data"]["job_id"]
    return holder, waiter


class Watched:
    """A page whose console errors and uncaught exceptions are collected."""

    def __init__(self, browser: Any, **context: Any) -> None:
        self.context = browser.new_context(**context)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def login(self, hub: Hub, name: str, password: str) -> None:
        page = self.page
        page.goto(f"{hub.url}/hub/login?next=/services/gpujobs/")
        page.fill("input[name=username]", name)
        page.fill("input[name=password]", password)
        page.click("input[type=submit], button[type=submit]")
        # The hub sends the browser to the dashboard, which logs in through the hub by itself.
        page.wait_for_url(f"{hub.url}/services/gpujobs/**", timeout=TIMEOUT_MS)
        page.wait_for_selector("#who:not(:empty)", timeout=TIMEOUT_MS)

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"dashboard-{name}.png"), full_page=True)


def test_a_user_and_an_admin_use_the_dashboard(hub: Hub, admin: httpx.Client) -> None:
    ines = service_as(hub, admin, "ines")
    job_id = finished_job(ines, "hello-dashboard", "print('<b>not bold</b> from the job')")
    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright)
        user = Watched(browser, viewport={"width": 1280, "height": 900})
        try:
            user.login(hub, "ines", hub.password)
            page = user.page
            assert page.text_content("#who") == "ines"
            assert page.is_hidden("#nav-admin")  # not an admin
            page.wait_for_selector(".type-row .bar", timeout=TIMEOUT_MS)
            assert "t4" in page.text_content(".types")
            page.wait_for_selector("text=hello-dashboard", timeout=TIMEOUT_MS)
            user.shot("overview")

            # A job that waits says where it stands and why, in words, and can be cancelled there.
            holder, waiter = hold_both_gpus_and_wait(ines)
            try:
                row = page.locator("#queue tr", has_text="waits-for-a-t4")
                row.wait_for(timeout=TIMEOUT_MS)  # the overview refreshes by itself
                why = row.locator("td.why").text_content() or ""
                assert why.startswith("#1: ") and "t4" in why, why
                assert "normal" in (row.text_content() or "")  # its priority
                assert "1 yours" in page.text_content("main")
                user.shot("queue")
                row.get_by_role("button", name="Cancel waits-for-a-t4").click()
                wait_for(
                    lambda: ines.get(f"api/k8s/job/{waiter}/status").json()["data"]["status"] == "cancelled",
                    what="the queued job to be cancelled from the dashboard",
                )
            finally:
                for job in (holder, waiter):
                    ines.post(f"api/k8s/job/{job}/cancel")

            # The job's page: its fields, what happened, its log, all as text.
            page.click("text=hello-dashboard")
            page.wait_for_url(f"**/services/gpujobs/#/job/{job_id}", timeout=TIMEOUT_MS)
            page.wait_for_selector("#log[data-ended=true]", timeout=TIMEOUT_MS)
            assert "<b>not bold</b> from the job" in page.text_content("#log")  # shown, never rendered
            assert page.locator("#log b").count() == 0
            assert "completed" in page.text_content("dl.fields")
            assert page.get_by_role("button", name="Cancel hello-dashboard").count() == 0  # it ended
            user.shot("job")

            # The nodes, filtered on the service; keyboard only.
            page.goto(f"{hub.url}/services/gpujobs/#/nodes")
            page.wait_for_selector("table >> text=Free / total", timeout=TIMEOUT_MS)
            assert page.locator("tbody tr").count() >= 1
            page.focus("#f-state")
            page.select_option("#f-state", "cordoned")
            page.wait_for_selector("text=No node matches.", timeout=TIMEOUT_MS)
            user.shot("nodes")

            # A phone's screen: nothing wider than the screen but the tables, which scroll.
            phone = Watched(browser, viewport={"width": 390, "height": 844}, is_mobile=True)
            phone.context.add_cookies(user.context.cookies())
            phone.page.goto(f"{hub.url}/services/gpujobs/")
            phone.page.wait_for_selector(".type-row .bar", timeout=TIMEOUT_MS)
            width = phone.page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the page is {width}px wide on a 390px screen"
            phone.shot("phone")
            assert phone.errors == []
        except Exception:
            user.shot("failure-user")
            raise
        assert user.errors == [], user.errors

        boss = Watched(browser, viewport={"width": 1280, "height": 900})
        try:
            boss.login(hub, hub.admin, hub.admin_password)
            page = boss.page
            assert page.is_visible("#nav-admin")
            page.click("#nav-admin")
            page.wait_for_selector("#usage-chart .chart-row", timeout=TIMEOUT_MS)
            assert page.locator("#usage-chart .chart-row").count() == 7  # one per day
            page.wait_for_selector("td >> text=hello-dashboard", timeout=TIMEOUT_MS)  # everyone's jobs
            assert "ines" in page.text_content("table:last-of-type")
            with page.expect_download(timeout=TIMEOUT_MS) as download:
                page.click("#csv")
            rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
            assert any(row.get("user") == "ines" for row in rows), rows
            boss.shot("admin")
        except Exception:
            boss.shot("failure-admin")
            raise
        assert boss.errors == [], boss.errors
        browser.close()
