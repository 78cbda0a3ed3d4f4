"""A small HTTP client for the gpujobs service.  Imports no server code.

Inside a JupyterHub user server it needs no arguments: the service URL comes from ``GPUJOBS_URL``
(set by the hub's pre-spawn hook) or the hub's public URL plus ``/services/gpujobs/``, and the token
from ``JUPYTERHUB_API_TOKEN``.

Example::

    from gpujobs import Client
    client = Client()
    job = client.submit("train.py", gpus=2, gpu_type="a100", memory="16Gi")
    for line in job.logs(follow=True):
        print(line, end="")
    job.status()["status"]          # 'completed'
"""

from __future__ import annotations

import hmac
import os
import random
import secrets
import sys
import time
import uuid
from collections.abc import Generator, Iterator, Mapping, Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import httpx

from ..localaccess import local_proof, read_local_access

TERMINAL = frozenset({"completed", "failed", "cancelled"})

# Seconds to wait before each new attempt at a submission; four retries, under 4 s in all: long enough
# to ride out a service restart or a proxy hiccup, short enough that a notebook cell does not seem hung.
SUBMIT_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0)
# Answers that say "not now" rather than "no": a crash, or a proxy that could not reach the service.
_RETRY_STATUSES = frozenset({500, 502, 503, 504})


class ApiError(Exception):
    """The service refused a request; ``message`` says why, ``field`` names the part of the spec."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


def _service_url_from_env(env: Mapping[str, str]) -> str | None:
    if env.get("GPUJOBS_URL"):
        return env["GPUJOBS_URL"]
    public = env.get("JUPYTERHUB_PUBLIC_URL") or env.get("JUPYTERHUB_PUBLIC_HUB_URL")
    if public:
        return public.rstrip("/").removesuffix("/hub") + "/services/gpujobs/"
    return None


def _worth_retrying(exc: httpx.HTTPError) -> bool:
    """Connection refused or dropped, timeouts: the next attempt may succeed.  A URL with a scheme
    httpx does not speak, or endless redirects, will not."""
    return isinstance(exc, httpx.TransportError) and not isinstance(exc, httpx.UnsupportedProtocol)


def _jittered(delay: float) -> float:
    # Many notebooks that lost the service at the same moment should not come back in lockstep.
    return delay * random.uniform(0.8, 1.2)


def _portable_path(script: str, env: Mapping[str, str]) -> str:
    """A script path the service understands wherever your home is mounted.

    The service resolves relative paths against your home.  A file that exists here is sent relative
    to your home when it lies inside it (so a container's /home/jovyan and the host's folder agree),
    else as an absolute path (shared storage).  Anything else is sent as given.
    """
    if not os.path.exists(script):
        return script
    absolute = os.path.realpath(script)
    home = os.path.realpath(env.get("HOME") or os.path.expanduser("~"))
    if absolute.startswith(home + os.sep):
        return os.path.relpath(absolute, home)
    return absolute


class LocalTokenAuth(httpx.Auth):
    """The token a service without a hub keeps for its user, sent only after whatever listens at the
    service's address has answered a fresh nonce with proof that it holds the same token: while the
    service is down, another program on its port would otherwise collect the token."""

    requires_response_body = True

    def __init__(self, token: str, proof_url: str) -> None:
        self._token = token
        self._proof_url = proof_url
        self._proven = False

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if not self._proven:
            nonce = secrets.token_hex(16)
            answer = yield httpx.Request("GET", self._proof_url, params={"nonce": nonce})
            try:
                proof = answer.json()["data"]["proof"]
            except (ValueError, KeyError, TypeError):
                proof = None
            if not isinstance(proof, str) or not hmac.compare_digest(proof, local_proof(self._token, nonce)):
                where = self._proof_url.rsplit("/api/", 1)[0] + "/"
                raise ApiError(
                    0,
                    f"what answers at {where} cannot prove it is the gpujobs service that keeps your "
                    "token (is it running?): the token was not sent",
                )
            self._proven = True
        request.headers["Authorization"] = f"token {self._token}"
        yield request


class Client:
    """Talks to the gpujobs service.

    Args:
        url: the service's base URL (``http://hub:8000/services/gpujobs/``); from the environment if None.
        token: a JupyterHub API token; ``GPUJOBS_TOKEN`` or ``JUPYTERHUB_API_TOKEN`` if None.  Without
            either, a service without a hub on this machine (``gpujobs serve``) is found through what
            it keeps in its data dir (``GPUJOBS_DATA_DIR``, or the default one).
        timeout: seconds for each request (log follows are not limited).
        submit_retry_delays: seconds to wait before each retry of a submission that could not reach
            the service or got a 5xx answer; its length is the number of retries (``()``: none).
    Raises:
        ApiError: when no URL or token can be found.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        submit_retry_delays: Sequence[float] = SUBMIT_RETRY_DELAYS,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        url = url or _service_url_from_env(env)
        token = token or env.get("GPUJOBS_TOKEN") or env.get("JUPYTERHUB_API_TOKEN")
        auth: httpx.Auth | None = None
        if not url or not token:
            # A service without a hub on this machine leaves its address and its user's token in its
            # data dir.  That token goes only to that address, and only once whatever answers there
            # has proved it holds it; no other token goes there.
            local = read_local_access(env)
            if local is not None and (not url or url.rstrip("/") == local.url.rstrip("/")):
                url, token = local.url, local.token
                auth = LocalTokenAuth(local.token, local.url.rstrip("/") + "/api/local/proof")
        if not url:
            raise ApiError(
                0,
                "no gpujobs URL: set GPUJOBS_URL (e.g. http://127.0.0.1:8000/services/gpujobs/), or start "
                "`gpujobs serve` on this machine (it leaves its address in its data dir)",
            )
        if not token:
            raise ApiError(
                0,
                "no token: set JUPYTERHUB_API_TOKEN (a JupyterHub API token: the hub's Token page makes one)",
            )
        self.url = url.rstrip("/") + "/"
        self._env = env
        self._submit_retry_delays = tuple(submit_retry_delays)
        headers = {} if auth is not None else {"Authorization": f"token {token}"}
        self._http = httpx.Client(base_url=self.url, headers=headers, auth=auth, timeout=timeout)

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- raw requests -----------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path.lstrip("/"), **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach gpujobs at {self.url}: {exc.__class__.__name__}") from None
        return self._data(response)

    def _request_idempotent(self, method: str, path: str, key: str, **kwargs: Any) -> Any:
        """``_request`` that sends ``Idempotency-Key: key`` and repeats the very same request while the
        service cannot be reached or answers 5xx: the key makes a repeat return the job the first
        attempt may have created instead of creating a second one.
        """
        headers = {"Idempotency-Key": key}
        attempts = len(self._submit_retry_delays) + 1
        status, problem = 0, ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(_jittered(self._submit_retry_delays[attempt - 1]))
            try:
                response = self._http.request(method, path.lstrip("/"), headers=headers, **kwargs)
            except httpx.HTTPError as exc:
                if not _worth_retrying(exc):
                    raise ApiError(
                        0, f"cannot reach gpujobs at {self.url}: {exc.__class__.__name__}"
                    ) from None
                status, problem = 0, f"could not reach it ({exc.__class__.__name__})"
                continue
            if response.status_code not in _RETRY_STATUSES:
                return self._data(response)
            status, problem = response.status_code, f"it answered {_describe_failure(response)}"
        raise ApiError(
            status,
            f"gave up on gpujobs at {self.url} after {attempts} attempts: {problem}.  Submitting again "
            f"with the idempotency key {key} is safe: it gives back the job an attempt may have created.",
        )

    def _data(self, response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            raise ApiError(response.status_code, _not_the_service(self.url, response)) from None
        if response.status_code >= 400 or not body.get("success", False):
            data = body.get("data") or {}
            raise ApiError(response.status_code, body.get("message", "request failed"), data.get("field"))
        return body.get("data")

    # --- the API --------------------------------------------------------------------------------

    def service_info(self) -> dict[str, Any]:
        """The service's health and settings a client offers: ``{"executor", "priorities",
        "default_priority", "queued", "running", "version", ...}``."""
        result: dict[str, Any] = self._request("GET", "healthz")
        return result

    def gpu_status(
        self,
        *,
        nodes: bool = True,
        limit: int | None = None,
        cursor: str | None = None,
        gpu_type: str | None = None,
        free: int | None = None,
    ) -> dict[str, Any]:
        """Totals, per type and per node: ``{"total_gpus", "available_gpus", "gpu_types", ...}``.  On a
        large cluster, ask for a page of nodes (``limit``; ``next_cursor`` in the answer is the next
        page's ``cursor``) and filter them (``gpu_type``, at least ``free`` of them free)."""
        params = {"nodes": str(nodes).lower()}
        chosen = {"limit": limit, "cursor": cursor, "gpu_type": gpu_type, "free": free}
        params.update({name: str(value) for name, value in chosen.items() if value is not None})
        result: dict[str, Any] = self._request("GET", "api/k8s/gpu-status", params=params)
        return result

    def submit(
        self,
        script: str | None = None,
        *,
        code: str | None = None,
        name: str | None = None,
        args: Sequence[str] = (),
        gpus: int | None = None,
        gpu_type: str | None = None,
        cpu: str | float | None = None,
        memory: str | None = None,
        priority: str | None = None,
        requirements: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        working_dir: str | None = None,
        timeout: int | None = None,
        retries: int | None = None,
        image: str | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Submit a script file (``script``) or inline source (``code``) and return its ``Job``.

        Example: ``client.submit("train.py", gpus=1, gpu_type="t4", requirements=["numpy"])``.

        A submission that cannot reach the service, or gets a 5xx answer, is sent again a few times
        (see ``submit_retry_delays``) under one ``Idempotency-Key``, so it creates at most one job even
        when an attempt got through but its answer was lost.  Pass ``idempotency_key`` (up to 255
        characters) to make a submission of your own safe to repeat, e.g. from a script that may be
        re-run; the same key with a different spec is refused.

        Raises ApiError (with ``field``) when the service refuses the spec, or when it could not be
        reached after the retries.
        """
        if script is not None:
            script = _portable_path(script, self._env)
        spec: dict[str, Any] = {
            "name": name or (os.path.basename(script) if script else "cell"),
            "script_path": script,
            "script": code,
            "args": list(args) or None,
            "gpu_count": gpus,
            "gpu_type": gpu_type,
            "cpu_limit": str(cpu) if cpu is not None else None,
            "memory_limit": memory,
            "priority": priority,
            "requirements": list(requirements) or None,
            "environment": dict(env) if env else None,
            "working_dir": working_dir,
            "timeout_seconds": timeout,
            "retries": retries,
            "image": image,
        }
        if gpus:
            spec["gpu_required"] = True
        # Unset fields are left out, so an older service accepts a newer client.
        body = {key: value for key, value in spec.items() if value is not None}
        # One key per submission, not per attempt: that is what makes the retries safe.
        key = uuid.uuid4().hex if idempotency_key is None else idempotency_key
        return Job(self, self._request_idempotent("POST", "api/k8s/submit-job", key, json=body))

    def jobs(
        self, *, user: str | None = None, status: str | Sequence[str] | None = None, limit: int = 50
    ) -> list[Job]:
        """Your jobs, newest first (admins: ``user="*"`` for everyone's)."""
        if status is not None and not isinstance(status, str):
            status = ",".join(status)
        params = {
            key: value for key, value in {"user": user, "status": status, "limit": limit}.items() if value
        }
        page = self._request("GET", "api/k8s/jobs", params=params)
        return [Job(self, view) for view in page["jobs"]]

    def job(self, job_id: str) -> Job:
        return Job(self, self._request("GET", f"api/k8s/job/{job_id}/status"))

    def _stream(self, path: str, params: dict[str, str]) -> Iterator[str]:
        try:
            with self._http.stream(
                "GET", path, params=params, timeout=httpx.Timeout(None, connect=30)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    self._data(response)
                yield from response.iter_lines()
        except httpx.HTTPError as exc:
            raise ApiError(0, f"lost the connection to gpujobs: {exc.__class__.__name__}") from None


class Job:
    """A submitted job.  ``view`` is the last status the service reported."""

    def __init__(self, client: Client, view: dict[str, Any]) -> None:
        self.client = client
        self.view = view
        self.id: str = view["job_id"]

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.view.get('name')!r} {self.state}>"

    @property
    def state(self) -> str:
        return str(self.view["status"])

    def status(self) -> dict[str, Any]:
        """Fetch and return the current job view."""
        self.view = self.client._request("GET", f"api/k8s/job/{self.id}/status")
        return self.view

    def logs(self, *, follow: bool = False, tail: int | None = None) -> Any:
        """The output so far (a string), or with ``follow=True`` an iterator of lines until the job ends."""
        if follow:
            return (
                line + "\n" for line in self.client._stream(f"api/k8s/job/{self.id}/logs", {"follow": "true"})
            )
        params = {"tail": str(tail)} if tail is not None else {}
        return self.client._request("GET", f"api/k8s/job/{self.id}/logs", params=params)["logs"]

    def cancel(self) -> dict[str, Any]:
        self.view = self.client._request("POST", f"api/k8s/job/{self.id}/cancel")
        return self.view

    def wait(
        self, *, timeout: float | None = None, poll: float = 1.0, show: bool = True, out: TextIO | None = None
    ) -> dict[str, Any]:
        """Wait until the job ends, printing each change of state (and why it waits); return the view.

        Raises TimeoutError when ``timeout`` seconds pass first.
        """
        out = out or sys.stdout
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        while True:
            view = self.status()
            line = describe(view)
            if show and line != last:
                print(line, file=out, flush=True)
                last = line
            if view["status"] in TERMINAL:
                return view
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} still {view['status']} after {timeout} s")
            time.sleep(poll)


def _not_the_service(url: str, response: httpx.Response) -> str:
    """What to say when the answer is not gpujobs' JSON: most often the URL is JupyterHub's own (its
    login redirect, its pages), and the service lives under it at /services/gpujobs/."""
    text = f"{url} answered {response.status_code} with no gpujobs answer (not JSON)"
    parts = urlsplit(url)
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    redirected_to_hub = response.is_redirect and "/hub/" in response.headers.get("location", "")
    if not (redirected_to_hub or "/hub/" in path or "/user/" in path):
        return text  # a service of its own (no hub), a proxy's error page: nothing to advise
    root = path
    for marker in ("/hub/", "/user/", "/services/"):
        root = root.split(marker, 1)[0]
    root = root.rstrip("/")
    service = urlunsplit((parts.scheme, parts.netloc, f"{root}/services/gpujobs/", "", ""))
    return f"{text}: that looks like JupyterHub itself, not its gpujobs service; use {service}"


def _describe_failure(response: httpx.Response) -> str:
    """``503 (the job database does not answer)``: the status, and the service's message if it sent one
    (a proxy's error page is not worth quoting)."""
    try:
        message = response.json().get("message")
    except (ValueError, AttributeError):
        message = None
    return f"{response.status_code} ({message})" if message else str(response.status_code)


def describe(view: Mapping[str, Any]) -> str:
    """One line for people: ``job 3f2a… (train): queued #2 — no free a100: 0 of 2 free``."""
    text = f"job {view['job_id']} ({view.get('name')}): {view['status']}"
    if view.get("queue_position"):
        text += f" #{view['queue_position']}"
    if view["status"] in ("failed", "cancelled") and view.get("reason"):
        text += f" [{view['reason']}]"
    if view.get("message"):
        text += f" — {view['message']}"
    return text
