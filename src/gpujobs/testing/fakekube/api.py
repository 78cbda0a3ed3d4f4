"""The Kubernetes REST API subset gpujobs uses, over real HTTP (Starlette), with fault injection."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

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


@dataclass
class Faults:
    """What tests can make go wrong: errors, slowness, watches that drop."""

    errors: int = 0  # the next N requests answer 500
    delay_seconds: float = 0.0
    drop_watches: bool = False  # watches break off mid-stream (and new ones at once) while set
    # (method, path, query, bearer token) of every request, for tests that check what clients did
    requests: list[tuple[str, str, str, str]] = field(default_factory=list)


def status(code: int, reason: str, message: str) -> JSONResponse:
    return JSONResponse(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "code": code,
            "reason": reason,
            "message": message,
        },
        status_code=code,
    )


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
        key, value = term.split("=", 1)
        if key == "spec.nodeName" and obj.get("spec", {}).get("nodeName", "") != value:
            return False
        if key == "metadata.name" and obj["metadata"]["name"] != value:
            return False
    return True


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


def build_app(store: Store, simulator: Simulator, faults: Faults) -> Starlette:
    async def handle(request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        faults.requests.append((request.method, request.url.path, request.url.query, token))
        if faults.delay_seconds:
            await asyncio.sleep(faults.delay_seconds)
        if faults.errors > 0:
            faults.errors -= 1
            return status(500, "InternalError", "injected fault")
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
        if params.get("watch") in ("1", "true", "True"):
            return StreamingResponse(
                watch(
                    kind,
                    namespace,
                    int(params.get("resourceVersion") or store.rv),
                    labels,
                    fields,
                    float(params.get("timeoutSeconds") or 300),
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
        kind: str, namespace: str | None, since: int, labels: str | None, fields: str | None, timeout: float
    ) -> AsyncIterator[bytes]:
        deadline = asyncio.get_running_loop().time() + timeout
        position = since
        while asyncio.get_running_loop().time() < deadline:
            if faults.drop_watches:  # the connection breaks: the client sees an incomplete body
                raise ConnectionResetError("injected: watch connection dropped")
            try:
                events = store.events_since(position)
            except Gone:
                yield (
                    json.dumps(
                        {
                            "type": "ERROR",
                            "object": {
                                "kind": "Status",
                                "apiVersion": "v1",
                                "status": "Failure",
                                "code": 410,
                                "reason": "Expired",
                                "message": f"too old resource version: {position}",
                            },
                        }
                    ).encode()
                    + b"\n"
                )
                return
            for event in events:
                position = event.rv
                obj = event.obj
                if event.kind != kind or (namespace and obj["metadata"].get("namespace") != namespace):
                    continue
                if not _matches(obj, labels, fields):
                    continue
                yield json.dumps({"type": event.type, "object": obj}).encode() + b"\n"
            async with store.changed:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(store.changed.wait(), timeout=0.5)

    async def pod_log(request: Request, namespace: str, name: str) -> Response:
        pod = store.get("Pod", namespace, name)
        if pod is None:
            return status(404, "NotFound", f'pods "{name}" not found')
        container = request.query_params.get("container") or pod["spec"]["containers"][0]["name"]
        path = simulator.sandbox(pod) / f"{container}.log"
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


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """JSON merge patch (RFC 7386)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
