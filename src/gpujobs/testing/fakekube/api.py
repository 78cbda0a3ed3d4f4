"""The Kubernetes REST API subset gpujobs uses, over real HTTP (Starlette), with fault injection."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .controllers import Simulator
from .store import Conflict, Gone, Store

# kind → (group/version, plural, namespaced)
KINDS = {
    "Node": ("v1", "nodes", False),
    "Namespace": ("v1", "namespaces", False),
    "Pod": ("v1", "pods", True),
    "ConfigMap": ("v1", "configmaps", True),
    "Event": ("v1", "events", True),
    "Job": ("batch/v1", "jobs", True),
}
BY_PLURAL = {(group, plural): kind for kind, (group, plural, _) in KINDS.items()}

FAULT_KINDS = ("status", "reset-before", "reset-after", "hang")

# The reason a kube-apiserver gives with each code (409 is AlreadyExists on a create, else Conflict).
REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
MESSAGES = {
    429: "Too many requests, please try again later.",
    500: "Internal error occurred",
    503: "The server is currently unable to handle the request",
    504: "The server was unable to return a response in the time allotted",
}


@dataclass
class FaultRule:
    """One injected fault: the next ``times`` requests that match get it (``times=None``: every one)."""

    fault: str  # one of FAULT_KINDS
    method: str | None = None  # None: any method
    path: str | None = None  # a substring of the URL path; None: any path
    status: int = 500  # "status": the code answered
    retry_after: int | None = None  # "status": the Retry-After header (and details.retryAfterSeconds)
    seconds: float = 30.0  # "hang": how long the request waits before it is handled
    times: int | None = 1
    used: int = 0  # how many requests it has hit so far

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method.upper() == method.upper()) and (
            self.path is None or self.path in path
        )


@dataclass
class Faults:
    """What tests can make go wrong: errors, slowness, watches that drop or go silent, and targeted
    faults for the requests of a method and path (``inject``)."""

    errors: int = 0  # the next N requests answer 500
    delay_seconds: float = 0.0
    drop_watches: bool = False  # watches break off mid-stream (and new ones at once) while set
    silent_watches: bool = False  # watches stay open but deliver nothing (no events, no bookmarks)
    # (method, path, query, bearer token) of every request, for tests that check what clients did
    requests: list[tuple[str, str, str, str]] = field(default_factory=list)
    rules: list[FaultRule] = field(default_factory=list)  # first match wins; used-up rules go
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def inject(
        self,
        method: str | None = None,
        path: str | None = None,
        fault: str = "status",
        *,
        status: int = 500,
        retry_after: int | None = None,
        seconds: float = 30.0,
        times: int | None = 1,
    ) -> FaultRule:
        """Make the next ``times`` requests of ``method`` (None: any) whose URL path contains ``path``
        (None: any) go wrong; ``times=None``: until ``clear()``.

        - ``"status"``: answer ``status`` with a Kubernetes Status body, and a ``Retry-After`` header
          when ``retry_after`` is given; nothing is done;
        - ``"reset-before"``: the connection is reset before any answer; nothing is done;
        - ``"reset-after"``: the request is done (a create lands), then the connection is reset
          before the answer;
        - ``"hang"``: the request waits ``seconds``, then is handled.

        Only the Kubernetes API paths are affected, not ``/version`` or ``/fake/...``."""
        if fault not in FAULT_KINDS:
            raise ValueError(f"unknown fault {fault!r}: one of {', '.join(FAULT_KINDS)}")
        if fault == "status" and not 400 <= status <= 599:
            raise ValueError(f"status {status}: an error code (400-599) is expected")
        seconds_after = None if retry_after is None else int(retry_after)  # the header takes integers
        rule = FaultRule(fault, method, path, status, seconds_after, seconds, times)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Remove every injected rule (``errors``, ``delay_seconds`` and the watch flags stay)."""
        with self._lock:
            self.rules.clear()

    def take(self, method: str, path: str) -> FaultRule | None:
        """The first rule this request matches, counted as used (and removed once used up)."""
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path):
                    rule.used += 1
                    if rule.times is not None and rule.used >= rule.times:
                        self.rules.remove(rule)
                    return rule
        return None


def status(
    code: int,
    reason: str,
    message: str,
    *,
    details: Mapping[str, Any] | None = None,
    retry_after: int | None = None,
) -> JSONResponse:
    """A Kubernetes Status answer (with a Retry-After header when ``retry_after`` is given)."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = dict(details)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse(body, status_code=code, headers=headers)


def too_large(asked: int, current: int) -> JSONResponse:
    """What a kube-apiserver answers a watch (or list) from a resourceVersion it has not reached, as
    clients see after it came back with an empty etcd: 504, reason Timeout, ResourceVersionTooLarge."""
    return status(
        504,
        "Timeout",
        f"Too large resource version: {asked}, current: {current}",
        details={
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1,
        },
        retry_after=1,
    )


class _Broken(Response):
    """The answer on a connection that was reset: nothing is sent; wait until the server noticed."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(5):
                while (await receive())["type"] != "http.disconnect":
                    pass


async def _raise_before_body() -> AsyncIterator[bytes]:
    raise ConnectionResetError("injected: connection reset")
    yield b""  # unreachable: makes this an async generator


def _matches(obj: dict[str, Any], label_selector: str | None, field_selector: str | None) -> bool:
    labels = obj["metadata"].get("labels", {})
    for term in filter(None, (label_selector or "").split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term not in labels:
            return False
    for term in filter(None, (field_selector or "").split(",")):
        negated = "!=" in term
        key, value = term.replace("!=", "=").replace("==", "=").split("=", 1)
        if key not in FIELDS:
            continue  # not a field this fake selects on: ignored
        found: Any = obj
        for part in key.split("."):
            found = found.get(part, "") if isinstance(found, dict) else ""
        if (str(found or "") == value) == negated:
            return False
    return True


# The field selectors answered (a real API server supports a few per kind, and these are among them).
FIELDS = {
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "status.phase",
    "involvedObject.kind",
    "involvedObject.name",
    "involvedObject.namespace",
    "involvedObject.uid",
    "reason",
    "type",
}


def _line(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def _node_field(field_selector: str | None) -> str | None:
    """The node of a ``spec.nodeName=NODE`` field selector (answered from the store's index)."""
    for term in filter(None, (field_selector or "").split(",")):
        key, _, value = term.partition("=")
        if key == "spec.nodeName":
            return value
    return None


def _encode_continue(key: tuple[str, str], rv: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([*key, rv]).encode()).decode()


def _decode_continue(token: str | None) -> tuple[tuple[str, str] | None, str | None]:
    """(the last key listed, the list's resourceVersion): every page of a list answers with its first
    page's resourceVersion, so a watch from there misses nothing that changed while paging."""
    if not token:
        return None, None
    namespace, name, rv = json.loads(base64.urlsafe_b64decode(token.encode()))
    return (namespace, name), rv


def build_app(
    store: Store,
    simulator: Simulator,
    faults: Faults,
    *,
    bookmark_seconds: float = 5.0,
    break_connection: Callable[[Scope], bool] | None = None,
) -> Starlette:
    """The API over ``store``.  ``bookmark_seconds``: how often watches that allow bookmarks get one;
    ``break_connection``: resets the connection a request came on (the server knows how; without it,
    or when it cannot, an injected reset breaks the response after its headers instead)."""

    def broken(request: Request) -> Response:
        if break_connection is not None and break_connection(request.scope):
            return _Broken()
        return StreamingResponse(_raise_before_body(), media_type="application/json")

    async def handle(request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        faults.requests.append((request.method, request.url.path, request.url.query, token))
        rule = faults.take(request.method, request.url.path)
        if rule is not None:
            if rule.fault == "status":
                return injected_status(request, rule)
            if rule.fault == "reset-before":
                return broken(request)
            if rule.fault == "hang":
                await asyncio.sleep(rule.seconds)
        if faults.delay_seconds:
            await asyncio.sleep(faults.delay_seconds)
        if faults.errors > 0:
            faults.errors -= 1
            return status(500, "InternalError", "injected fault")
        response = await dispatch(request)
        if rule is not None and rule.fault == "reset-after":
            return broken(request)  # done, but the answer is lost
        return response

    def injected_status(request: Request, rule: FaultRule) -> Response:
        code = rule.status
        reason = REASONS.get(code, "")
        if code == 409 and request.method == "POST":
            reason = "AlreadyExists"
        message = MESSAGES.get(code, reason or f"error {code}")
        return status(
            code,
            reason,
            f"{message} (injected by the fake cluster: {request.method} {request.url.path})",
            details={"retryAfterSeconds": rule.retry_after} if rule.retry_after is not None else None,
            retry_after=rule.retry_after,
        )

    async def dispatch(request: Request) -> Response:
        parts = [p for p in request.url.path.split("/") if p]
        # /api/v1/... or /apis/batch/v1/...
        if parts[:2] == ["api", "v1"]:
            group, rest = "v1", parts[2:]
        elif parts[:3] == ["apis", "batch", "v1"]:
            group, rest = "batch/v1", parts[3:]
        else:
            return status(404, "NotFound", f"no such path {request.url.path}")
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces" and (group, rest[2]) in BY_PLURAL:
            namespace, rest = rest[1], rest[2:]
        if not rest or (group, rest[0]) not in BY_PLURAL:
            return status(404, "NotFound", f"no such resource {request.url.path}")
        kind = BY_PLURAL[(group, rest[0])]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if kind == "Pod" and sub == "log" and name:
            return await pod_log(request, namespace, name)
        if name is None:
            if request.method == "GET":
                return await list_or_watch(request, kind, namespace or None, group)
            if request.method == "POST":
                return await create(request, kind, namespace, group)
        else:
            if request.method == "GET":
                found = store.get(kind, namespace, name)
                return (
                    JSONResponse(found) if found else status(404, "NotFound", f'{rest[0]} "{name}" not found')
                )
            if request.method == "DELETE":
                deleted = await simulator.delete_cascading(kind, namespace, name)
                return (
                    JSONResponse(deleted)
                    if deleted
                    else status(404, "NotFound", f'{rest[0]} "{name}" not found')
                )
            if request.method == "PATCH":
                return await patch(request, kind, namespace, name)
        return status(405, "MethodNotAllowed", f"{request.method} not allowed")

    async def create(request: Request, kind: str, namespace: str, group: str) -> Response:
        body = await request.json()
        body.setdefault("apiVersion", group)
        body.setdefault("kind", kind)
        if namespace and store.get("Namespace", "", namespace) is None:
            return status(404, "NotFound", f'namespaces "{namespace}" not found')
        if kind == "Pod":
            body.setdefault("status", {"phase": "Pending", "conditions": []})
        try:
            return JSONResponse(await store.create(kind, namespace, body), status_code=201)
        except Conflict:
            return status(
                409, "AlreadyExists", f'{KINDS[kind][1]} "{body["metadata"]["name"]}" already exists'
            )

    async def patch(request: Request, kind: str, namespace: str, name: str) -> Response:
        current = store.get(kind, namespace, name)
        if current is None:
            return status(404, "NotFound", f'"{name}" not found')
        _merge(current, await request.json())
        return JSONResponse(await store.update(kind, namespace, current))

    async def list_or_watch(request: Request, kind: str, namespace: str | None, group: str) -> Response:
        params = request.query_params
        labels, fields = params.get("labelSelector"), params.get("fieldSelector")
        asked = params.get("resourceVersion") or ""
        if asked.isdigit() and int(asked) > store.rv and not params.get("continue"):
            return too_large(int(asked), store.rv)
        if params.get("watch") in ("1", "true", "True"):
            return StreamingResponse(
                watch(
                    kind,
                    group,
                    namespace,
                    int(asked or store.rv),
                    labels,
                    fields,
                    float(params.get("timeoutSeconds") or 300),
                    params.get("allowWatchBookmarks") in ("1", "true", "True"),
                ),
                media_type="application/json",
            )
        node = _node_field(fields) if kind == "Pod" else None
        limit = int(params["limit"]) if params.get("limit", "").isdigit() else None
        after, list_rv = _decode_continue(params.get("continue"))
        list_rv = list_rv or str(store.rv)
        items = store.list(
            kind, namespace, lambda o: _matches(o, labels, fields), node=node, after=after, limit=limit
        )
        metadata = {"resourceVersion": list_rv}
        if limit and len(items) == limit:
            last = items[-1]["metadata"]
            metadata["continue"] = _encode_continue((last.get("namespace", ""), last["name"]), list_rv)
        return JSONResponse(
            {"kind": f"{kind}List", "apiVersion": group, "metadata": metadata, "items": items}
        )

    async def watch(
        kind: str,
        group: str,
        namespace: str | None,
        since: int,
        labels: str | None,
        fields: str | None,
        timeout: float,
        bookmarks: bool,
    ) -> AsyncIterator[bytes]:
        """Events after ``since`` until ``timeout``; with ``bookmarks``, a BOOKMARK every
        ``bookmark_seconds`` and one shortly before the end (a kube-apiserver sends it 2 s before)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + timeout
        last_bookmark_at = deadline - min(2.0, timeout / 4)
        next_bookmark = started + bookmark_seconds if bookmarks else float("inf")
        last_bookmark_sent = not bookmarks
        position = since
        while True:
            if faults.drop_watches:  # the connection breaks: the client sees an incomplete body
                raise ConnectionResetError("injected: watch connection dropped")
            if faults.silent_watches:  # connected, but nothing arrives (the deadline is not kept either)
                await asyncio.sleep(0.05)
                continue
            current = store.rv
            try:
                events = store.events_since(position)
            except Gone:
                yield _line(
                    {
                        "type": "ERROR",
                        "object": {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "metadata": {},
                            "status": "Failure",
                            "message": f"too old resource version: {position}",
                            "reason": "Expired",
                            "code": 410,
                        },
                    }
                )
                return
            interrupted = False
            for event in events:
                if faults.silent_watches or faults.drop_watches:
                    interrupted = True
                    break
                position = event.rv
                obj = event.obj
                if event.kind != kind or (namespace and obj["metadata"].get("namespace") != namespace):
                    continue
                if not _matches(obj, labels, fields):
                    continue
                yield _line({"type": event.type, "object": obj})
            if interrupted:
                continue
            position = max(position, current)  # everything up to the store's version was delivered
            now = loop.time()
            if bookmarks and (now >= next_bookmark or (not last_bookmark_sent and now >= last_bookmark_at)):
                yield _line(
                    {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": kind,
                            "apiVersion": group,
                            "metadata": {"resourceVersion": str(position)},
                        },
                    }
                )
                next_bookmark = now + bookmark_seconds
                last_bookmark_sent = last_bookmark_sent or now >= last_bookmark_at
            if now >= deadline:
                return
            wake = min(deadline, next_bookmark, deadline if last_bookmark_sent else last_bookmark_at)
            await store.wait_for_change(after=position, timeout=max(0.0, min(0.5, wake - now)))

    async def pod_log(request: Request, namespace: str, name: str) -> Response:
        pod = store.get("Pod", namespace, name)
        if pod is None:
            return status(404, "NotFound", f'pods "{name}" not found')
        container = request.query_params.get("container") or pod["spec"]["containers"][0]["name"]
        path = simulator.sandbox(pod) / f"{container}.log"
        if not path.exists() and not _has_started(pod, container):  # as a kubelet answers
            waiting = "PodInitializing" if pod["spec"].get("initContainers") else "ContainerCreating"
            return status(
                400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: {waiting}'
            )
        follow = request.query_params.get("follow") in ("1", "true")
        tail = request.query_params.get("tailLines")
        if not follow:
            text = path.read_text(errors="replace") if path.exists() else ""
            if tail:
                text = "".join(text.splitlines(keepends=True)[-int(tail) :])
            return Response(text, media_type="text/plain")

        async def stream() -> AsyncIterator[bytes]:
            position = 0
            while True:
                current = store.get("Pod", namespace, name)
                done = current is None or current["status"].get("phase") in ("Succeeded", "Failed")
                if path.exists():
                    with open(path, "rb") as handle:
                        handle.seek(position)
                        chunk = handle.read()
                        position += len(chunk)
                    if chunk:
                        yield chunk
                        continue
                if done:
                    return
                await asyncio.sleep(0.05)

        return StreamingResponse(stream(), media_type="text/plain")

    async def version(_request: Request) -> Response:
        return JSONResponse({"major": "1", "minor": "31", "gitVersion": "v1.31.0-gpujobs-fake"})

    async def stats(_request: Request) -> Response:
        """Not Kubernetes: how many API calls clients made (benchmarks check that gpu-status makes none)."""
        return JSONResponse({"requests": len(faults.requests), "objects": store.rv})

    return Starlette(
        routes=[
            Route("/version", version),
            Route("/fake/stats", stats),
            Route("/{path:path}", handle, methods=["GET", "POST", "PATCH", "DELETE", "PUT"]),
        ]
    )


def _has_started(pod: dict[str, Any], container: str) -> bool:
    status = pod.get("status") or {}
    for entry in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        if entry.get("name") == container:
            state = entry.get("state") or {}
            return "running" in state or "terminated" in state
    return False


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """JSON merge patch (RFC 7386)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
