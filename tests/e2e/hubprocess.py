"""A real JupyterHub (with configurable-http-proxy and the gpujobs service) started by `gpujobs hub`."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from helpers import free_port, wait_for


class Hub:
    def __init__(self, data_dir: Path, *, simulate_gpus: str = "t4:2", admin: str = "boss") -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.password = "shared-pass-1234"
        self.admin = admin
        self.admin_password = "an-admin-password-of-at-least-32-chars"
        env = {
            **os.environ,
            "GPUJOBS_HUB_API_PORT": str(free_port()),
            "GPUJOBS_HUB_PROXY_API_PORT": str(free_port()),
            "GPUJOBS_HUB_SERVICE_PORT": str(free_port()),
            "GPUJOBS_HUB_ADMIN_PASSWORD": self.admin_password,
            "GPUJOBS_NVML": "false",
        }
        self.log_path = data_dir.parent / "hub.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gpujobs.cli",
                    "hub",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(data_dir),
                    "--password",
                    self.password,
                    "--admin",
                    admin,
                    "--simulate-gpus",
                    simulate_gpus,
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # The first start as root also makes the users' environment (pip downloads JupyterLab).
        wait_for(self._ready, timeout=600, what=f"JupyterHub (log: {self.log_path})")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the hub exited:\n{self.log_path.read_text()[-4000:]}")
        try:
            hub = httpx.get(f"{self.url}/hub/health", timeout=2)
            service = httpx.get(f"{self.url}/services/gpujobs/healthz", timeout=2)
        except httpx.HTTPError:
            return False
        return hub.status_code == 200 and service.status_code == 200

    def login(self, name: str, password: str | None = None) -> httpx.Client:
        """A browser-like session: the login form, with its xsrf token, as a person would."""
        browser = httpx.Client(base_url=self.url, follow_redirects=True, timeout=60)
        page = browser.get("/hub/login")
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        form = {"username": name, "password": password or self.password}
        if xsrf:
            form["_xsrf"] = xsrf.group(1)
        answer = browser.post("/hub/login", data=form)
        assert answer.status_code == 200 and "/hub/login" not in str(answer.url), answer.text[:500]
        return browser

    def admin_token(self) -> str:
        browser = self.login(self.admin, self.admin_password)
        # The hub may have set _xsrf for more than one path (its pages and a user server's): take the
        # one the browser would send to /hub/api/, the longest path that covers it.
        paths = [cookie for cookie in browser.cookies.jar if cookie.name == "_xsrf"]
        covering = [cookie for cookie in paths if "/hub/api/".startswith(cookie.path.rstrip("/") + "/")]
        xsrf = max(covering, key=lambda cookie: len(cookie.path)).value if covering else ""
        response = browser.post(
            f"/hub/api/users/{self.admin}/tokens",
            json={"note": "e2e"},
            headers={"X-XSRFToken": xsrf, "Referer": f"{self.url}/hub/token"},
        )
        assert response.status_code in (200, 201), response.text
        return str(response.json()["token"])

    def api(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.url}/hub/api", headers={"Authorization": f"token {token}"}, timeout=60
        )

    def user_server_env(self, admin: httpx.Client, name: str) -> dict[str, str]:
        """The environment the user's running server was given (read from its process)."""
        model: dict[str, Any] = admin.get(f"/users/{name}").json()
        pid = model["servers"][""]["state"]["pid"]
        raw = Path(f"/proc/{pid}/environ").read_bytes()
        return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)

    def user_server_process(self, admin: httpx.Client, name: str) -> tuple[str, int]:
        """The interpreter the user's running server was started with, and the account it runs as."""
        model: dict[str, Any] = admin.get(f"/users/{name}").json()
        pid = model["servers"][""]["state"]["pid"]
        python = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        return python, Path(f"/proc/{pid}").stat().st_uid

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        kill_processes_under(self.data_dir)


def kill_processes_under(folder: Path) -> None:
    """The hub stops its servers and services on exit; kill anything left working inside ``folder``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd == str(folder) or cwd.startswith(f"{folder}/"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
