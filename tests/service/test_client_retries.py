"""Submissions survive a flaky service: the real ``Client`` against a real HTTP server on 127.0.0.1
that drops connections, stalls or answers 5xx the first times, and records the ``Idempotency-Key``
of every request it sees.  Every retry must carry the first attempt's key, so the service can give
back the job an earlier attempt created instead of starting it twice.
"""

from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gpujobs import ApiError, Client
from gpujobs.cli import main
from gpujobs.client.magic import run_cell
from gpujobs.client.widgets import SubmitForm
from gpujobs.testing.processes import free_port

# Tests need not wait: the client's own backoff is for services, not for this fake.
NO_WAIT = (0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    key: str | None
    body: dict[str, Any]


class FlakyService(ThreadingHTTPServer):
    """Answers ``POST .../api/k8s/submit-job`` by following ``script``, one step per request:

    - ``"drop"``: read the request, then close the connection without a word;
    - ``"stall"``: read the request and answer nothing until the test ends (the client times out);
    - ``"proxy-502"``: a proxy's HTML error page;
    - an HTTP status: that status in the service's envelope (2xx with a job view: the same job for
      the same key, as the service does).

    When the script runs out it keeps answering 201.
    """

    daemon_threads = True

    def __init__(self, script: list[str | int]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = list(script)
        self.seen: list[Seen] = []
        self.jobs_by_key: dict[str | None, str] = {}
        self.released = threading.Event()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/services/gpujobs/"

    @property
    def keys(self) -> list[str | None]:
        return [request.key for request in self.seen]

    def next_step(self, request: Seen) -> str | int:
        with self.lock:
            self.seen.append(request)
            return self.script.pop(0) if self.script else 201

    def job_for(self, key: str | None) -> str:
        with self.lock:
            return self.jobs_by_key.setdefault(key, f"job-{len(self.jobs_by_key) + 1}")


class _Handler(BaseHTTPRequestHandler):
    server: FlakyService

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = Seen(self.headers.get("Idempotency-Key"), json.loads(self.rfile.read(length) or b"{}"))
        if not self.path.endswith("/api/k8s/submit-job"):
            self._answer(404, {"success": False, "data": None, "message": "not found"})
            return
        step = self.server.next_step(request)
        if step == "drop":
            self.close_connection = True
        elif step == "stall":
            self.server.released.wait()
            self.close_connection = True
        elif step == "proxy-502":
            self._send(502, b"<html><body>Bad Gateway</body></html>", "text/html")
        elif isinstance(step, int) and step < 300:
            view = {
                "job_id": self.server.job_for(request.key),
                "name": request.body.get("name"),
                "status": "queued",
            }
            self._answer(step, {"success": True, "data": view, "message": "job queued"})
        elif step == 422:
            data = {"field": "gpu_type"}
            self._answer(422, {"success": False, "data": data, "message": "no such GPU type: h100"})
        else:
            self._answer(
                int(step), {"success": False, "data": None, "message": "the job database does not answer"}
            )

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        self._send(
            status, json.dumps({**body, "timestamp": "2024-01-01T00:00:00Z"}).encode(), "application/json"
        )

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_args: Any) -> None:  # keep the test output clean
        pass


@pytest.fixture
def flaky() -> Iterator[Any]:
    """``flaky(script)`` starts a ``FlakyService``; all are stopped at the end of the test."""
    started: list[FlakyService] = []

    def start(script: list[str | int]) -> FlakyService:
        service = FlakyService(script)
        threading.Thread(target=service.serve_forever, args=(0.01,), daemon=True).start()
        started.append(service)
        return service

    yield start
    for service in started:
        service.released.set()
        service.shutdown()
        service.server_close()


def client_for(service: FlakyService, **options: Any) -> Client:
    return Client(service.url, token="alice-token", env={}, **{"submit_retry_delays": NO_WAIT, **options})


def one_key(service: FlakyService) -> str:
    """The single key every request carried (and that it looks like a fresh uuid4)."""
    keys = set(service.keys)
    assert len(keys) == 1, service.keys
    (key,) = keys
    assert key is not None and re.fullmatch(r"[0-9a-f]{32}", key)
    return key


# --- retries -----------------------------------------------------------------------------------------


def test_dropped_connections_are_retried_with_the_same_key(flaky: Any) -> None:
    service = flaky(["drop", "drop", 201])
    job = client_for(service).submit(code="print(1)", gpus=1, name="drops")
    assert job.id == "job-1"
    assert len(service.seen) == 3
    one_key(service)
    assert all(request.body == service.seen[0].body for request in service.seen)
    assert service.seen[0].body == {
        "name": "drops",
        "script": "print(1)",
        "gpu_count": 1,
        "gpu_required": True,
    }


def test_5xx_answers_are_retried_with_the_same_key(flaky: Any) -> None:
    service = flaky([503, "proxy-502", 504, 500, 201])
    job = client_for(service).submit(code="print(1)")
    assert job.id == "job-1" and job.state == "queued"
    assert len(service.seen) == 5
    one_key(service)


def test_a_read_timeout_is_retried_with_the_same_key(flaky: Any) -> None:
    service = flaky(["stall", 201])
    job = client_for(service, timeout=0.5).submit(code="print(1)")
    assert job.id == "job-1"
    assert len(service.seen) == 2
    one_key(service)


def test_a_repeat_answered_200_is_the_job(flaky: Any) -> None:
    # The first attempt created the job but its answer was lost; the repeat finds it: 200, same job.
    service = flaky(["drop", 200])
    job = client_for(service).submit(code="print(1)")
    assert job.id == "job-1"
    one_key(service)


def test_each_submission_has_its_own_key(flaky: Any) -> None:
    service = flaky([503, 201, 201])
    client = client_for(service)
    first, second = client.submit(code="print(1)"), client.submit(code="print(1)")
    assert first.id != second.id
    assert service.keys[0] == service.keys[1] != service.keys[2]


def test_an_explicit_key_is_sent_on_every_attempt(flaky: Any) -> None:
    service = flaky(["drop", 201])
    client_for(service).submit(code="print(1)", idempotency_key="nightly-2024-05-01")
    assert service.keys == ["nightly-2024-05-01", "nightly-2024-05-01"]


# --- giving up ----------------------------------------------------------------------------------------


def test_it_gives_up_after_the_bounded_attempts_and_says_why(flaky: Any) -> None:
    service = flaky([503] * 20)
    with pytest.raises(ApiError) as caught:
        client_for(service).submit(code="print(1)")
    key = one_key(service)
    assert len(service.seen) == len(NO_WAIT) + 1
    assert caught.value.status == 503
    message = str(caught.value)
    assert f"after {len(NO_WAIT) + 1} attempts" in message
    assert "503 (the job database does not answer)" in message
    assert key in message


def test_it_gives_up_when_nothing_listens(flaky: Any) -> None:
    client = Client(
        f"http://127.0.0.1:{free_port()}/", token="alice-token", env={}, submit_retry_delays=NO_WAIT
    )
    with pytest.raises(ApiError) as caught:
        client.submit(code="print(1)")
    assert caught.value.status == 0
    assert "after 5 attempts: could not reach it (ConnectError)" in str(caught.value)


def test_no_retry_configured_means_one_attempt(flaky: Any) -> None:
    service = flaky([503, 201])
    with pytest.raises(ApiError):
        client_for(service, submit_retry_delays=()).submit(code="print(1)")
    assert len(service.seen) == 1


def test_a_refused_spec_is_not_retried(flaky: Any) -> None:
    service = flaky([422, 201])
    with pytest.raises(ApiError) as caught:
        client_for(service).submit(code="print(1)", gpu_type="h100")
    assert (caught.value.status, caught.value.field) == (422, "gpu_type")
    assert len(service.seen) == 1


# --- every way of submitting goes through the client --------------------------------------------------


def test_the_cli_submits_with_a_key_and_retries(
    flaky: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    service = flaky([503, 201])
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "alice-token")
    assert main(["--url", service.url, "submit", "train.py", "--gpus", "1"]) == 0
    assert capsys.readouterr().out.strip() == "job-1"
    one_key(service)
    assert len(service.seen) == 2


def test_the_cli_passes_an_explicit_key(flaky: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    service = flaky([201])
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "alice-token")
    assert main(["--url", service.url, "submit", "train.py", "--idempotency-key", "run-7"]) == 0
    assert service.keys == ["run-7"]


def test_the_cell_magic_submits_with_a_key_and_retries(flaky: Any) -> None:
    service = flaky(["drop", 201])
    job = run_cell(client_for(service), "--gpus 1 --name cell", "print('hi')", out=io.StringIO())
    assert job.id == "job-1"
    one_key(service)
    assert service.seen[0].body["script"] == "print('hi')"


def test_the_submit_form_submits_with_a_key_and_retries(
    flaky: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # the form lists the scripts in your home
    service = flaky([503, 201])
    submitted: list[Any] = []
    form = SubmitForm(client_for(service), on_submitted=submitted.append)
    form.script.value = "train.py"
    form.submit_button.click()
    assert [job.id for job in submitted] == ["job-1"]
    one_key(service)
    assert len(service.seen) == 2
    form.close()
