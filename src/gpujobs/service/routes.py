"""The HTTP API: the brief's paths under the service prefix, each answer in the envelope."""

from __future__ import annotations

import csv
import io
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, BeforeValidator, Field, ValidationError

from ..errors import Forbidden, GpujobsError, InvalidSpec, NotFound, http_status
from ..gpustatus import ALL_NODES, NodeQuery, holders
from ..gputypes import normalise_gpu_type
from ..models import Envelope, ErrorDetail, GpuStatus, JobList, JobLogs, JobSpec, JobStatus, JobView
from ..store import repository as repo
from .audit import audit
from .auth import HubUser, LocalAuthenticator, token_from_header
from .dashboard import DASHBOARD_HEADER, SESSION_COOKIE
from .health import assess
from .responses import envelope, failure
from .runtime import Runtime
from .web import swagger_ui_folder

# Declared for OpenAPI; the value is parsed by token_from_header ('token X' or 'Bearer X').
_authorization = APIKeyHeader(
    name="Authorization", auto_error=False, description="token <JupyterHub API token>"
)

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Envelope[ErrorDetail], "description": text}
    for code, text in {
        401: "No valid token",
        403: "Not allowed",
        404: "No such job (or not yours)",
        409: "Not possible in the job's state",
        413: "Body too large",
        422: "Invalid request",
        429: "Over a quota",
        503: "A dependency (hub, database) does not answer",
    }.items()
}


async def runtime(request: Request) -> Runtime:
    # async, like every dependency here: FastAPI runs plain functions in a thread pool, which costs
    # two thread hops per request.
    state: Runtime = request.app.state.runtime
    return state


async def current_user(
    request: Request, _header: Annotated[str | None, Depends(_authorization)] = None
) -> HubUser:
    header = request.headers.get("authorization")
    session = request.cookies.get(SESSION_COOKIE)
    # The dashboard's cookie counts only with its header, which no other site's page can add.
    if header is None and session and request.headers.get(DASHBOARD_HEADER):
        token = token_from_header(f"token {session}")
    else:
        token = token_from_header(header)
    rt: Runtime = request.app.state.runtime
    user = await rt.auth.user_for_token(token)
    request.state.user = user.name  # for the audit of a refusal further on
    return user


User = Annotated[HubUser, Depends(current_user)]
Rt = Annotated[Runtime, Depends(runtime)]
router = APIRouter()


@router.get("/api/k8s/gpu-status", response_model=Envelope[GpuStatus], responses=_ERRORS, tags=["gpus"])
async def gpu_status(
    user: User,
    rt: Rt,
    nodes: Annotated[bool, Query(description="Include the per-node list.")] = True,
    limit: Annotated[
        int | None,
        Query(ge=1, le=1000, description="List at most this many nodes (by name); see next_cursor."),
    ] = None,
    cursor: Annotated[
        str | None, Query(max_length=253, description="The next_cursor of the previous page.")
    ] = None,
    gpu_type: Annotated[
        str | None, Query(max_length=64, description="Only nodes with GPUs of this type or family.")
    ] = None,
    free: Annotated[
        int, Query(ge=0, le=1024, description="Only nodes with at least this many of those GPUs free.")
    ] = 0,
    state: Annotated[
        Literal["ready", "cordoned", "not-ready"] | None,
        Query(description="Only nodes in this state: ready, cordoned (no new jobs) or not-ready."),
    ] = None,
) -> Response:
    """GPUs in all, per type (with the demand of queued jobs) and per node/device.  A device's
    ``job_id`` is the holding job's id for its owner and admins, ``other-users`` for anyone else, and
    ``other-workloads`` for what runs outside gpujobs.  On a large cluster, page the node list
    (``limit``, ``cursor``) and filter it (``gpu_type``, ``free``, ``state``); the totals always count
    every node."""
    query = ALL_NODES
    if limit is not None or cursor is not None or gpu_type is not None or free or state is not None:
        if not nodes:
            raise InvalidSpec(
                "limit, cursor, gpu_type, free and state choose nodes to list: drop nodes=false",
                field="nodes",
            )
        wanted = normalise_gpu_type(gpu_type, aliases=rt.settings.gpu_type_aliases) if gpu_type else None
        query = NodeQuery(limit=limit, cursor=cursor, gpu_type=wanted, free=free, state=state)
    active = rt.live.holding()
    inventory = rt.executor.inventory()
    status = rt.gpu_status.render(
        inventory,
        active,
        rt.scheduler.queued_demand,
        include_nodes=nodes,
        holds=rt.executor.external_holds(),
        viewer=None if user.admin else user.name,  # a user sees only their own jobs' ids
        nodes=query,
    )
    view = rt.executor.view_state()
    status = status.seen(view.stale, view.synced_at)
    message = f"{status.available_gpus} of {status.total_gpus} GPUs available"
    if view.stale:
        as_of = f" as of {view.synced_at:%H:%M:%S} UTC" if view.synced_at else ""
        message += f"{as_of}; {view.reason}"
    return envelope(status.body, message)


# Read by the route itself (like the body): declared here for OpenAPI.
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "Any string up to 255 characters: a repeat with the same key (same user, same body) "
    "answers 200 with the job the first request made instead of making another; the same key with "
    "another body is 422.  Kept at least 24 hours.",
}
_SPEC_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobSpec"}}},
}


@router.post(
    "/api/k8s/submit-job",
    status_code=201,
    response_model=Envelope[JobView],
    responses={
        **_ERRORS,
        200: {"model": Envelope[JobView], "description": "A repeat of an Idempotency-Key: the job it made"},
    },
    tags=["jobs"],
    openapi_extra={"requestBody": _SPEC_BODY, "parameters": [_IDEMPOTENCY_KEY]},
)
async def submit_job(request: Request) -> Response:
    """Queue a job (body: a ``JobSpec``).  The answer comes once the job is stored (201; 200 for a repeat
    of an ``Idempotency-Key``); the owner is the token's user.

    The body is parsed here rather than by FastAPI's dependency machinery: this is the hot path, and
    pydantic's JSON parser in one call costs a fraction of it (DESIGN §6, bench/submit.py).
    """
    started = time.perf_counter()
    user = await current_user(request)
    rt: Runtime = request.app.state.runtime
    try:
        try:
            spec = JobSpec.model_validate_json(await request.body())
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from None
        submitted = await rt.jobs.submit(user, spec, request.headers.get("idempotency-key"))
    except GpujobsError as exc:
        audit(request, "submit", user=user.name, outcome=f"refused {http_status(exc)}: {exc.message}")
        raise
    except RequestValidationError:
        audit(request, "submit", user=user.name, outcome="refused 422: invalid spec")
        raise
    rt.metrics.submit_seconds.observe(time.perf_counter() - started)
    job = submitted.job
    outcome = "created" if submitted.created else "repeat of an Idempotency-Key"
    audit(request, "submit", user=user.name, outcome=outcome, job_id=job.job_id)
    if not submitted.created:
        return envelope(rt.jobs.view(job), f"job {job.job_id} (made by an earlier request with this key)")
    return envelope(rt.jobs.view(job), f"job {job.job_id} queued", status=201)


@router.get(
    "/api/k8s/job/{job_id}/status", response_model=Envelope[JobView], responses=_ERRORS, tags=["jobs"]
)
async def job_status(job_id: str, user: User, rt: Rt) -> Response:
    job = await rt.jobs.visible_job(user, job_id)
    view = rt.jobs.view(job)
    return envelope(view, view.message or f"job {job_id} is {job.status.value}")


@router.get(
    "/api/k8s/job/{job_id}/logs",
    response_model=Envelope[JobLogs],
    responses={
        **_ERRORS,
        200: {"content": {"text/plain": {}}, "description": "JSON, or a text stream with follow"},
    },
    tags=["jobs"],
)
async def job_logs(
    job_id: str,
    user: User,
    rt: Rt,
    tail: Annotated[int | None, Query(ge=0, le=1_000_000, description="Only the last N lines.")] = None,
    follow: Annotated[
        bool, Query(description="Stream lines as they are written until the job ends.")
    ] = False,
) -> Response:
    """The job's output.  With ``follow=true`` a ``text/plain`` stream that ends when the job ends."""
    job = await rt.jobs.visible_job(user, job_id)
    if follow:
        return StreamingResponse(
            rt.jobs.follow_logs(job),
            media_type="text/plain; charset=utf-8",
            headers={"X-Accel-Buffering": "no", "Cache-Control": "no-cache"},
        )
    return await rt.jobs.logs_answer(job, tail)


class Whoami(BaseModel):
    name: str
    admin: bool = Field(
        description="May see and cancel every job, and read everyone's usage and the audit log."
    )
    groups: list[str]


@router.get("/api/k8s/whoami", response_model=Envelope[Whoami], responses=_ERRORS, tags=["service"])
async def whoami(user: User) -> Response:
    """Who the token belongs to, as gpujobs sees them (the dashboard shows admins their pages)."""
    return envelope(Whoami(name=user.name, admin=user.admin, groups=list(user.groups)), user.name)


@router.get("/api/k8s/jobs", response_model=Envelope[JobList], responses=_ERRORS, tags=["jobs"])
async def list_jobs(
    user: User,
    rt: Rt,
    request: Request,
    owner: Annotated[
        str | None, Query(alias="user", description="Whose jobs; admins may name anyone, or '*' for all.")
    ] = None,
    status: Annotated[str | None, Query(description="Comma-separated states, e.g. 'queued,running'.")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size, 1 to 500.")] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor from the previous page.")] = None,
) -> Response:
    """Jobs, newest first."""
    statuses = _parse_statuses(status)
    jobs, next_cursor = await rt.jobs.list_jobs(
        user, owner=owner or None, statuses=statuses, limit=limit, cursor=cursor
    )
    if owner and owner != user.name:  # an admin looking at other users' jobs
        audit(request, "list-jobs", user=user.name, outcome="ok", of=owner[:300])
    page = JobList(jobs=[rt.jobs.view(job) for job in jobs], next_cursor=next_cursor)
    return envelope(page, f"{len(jobs)} job(s)")


@router.post(
    "/api/k8s/job/{job_id}/cancel", response_model=Envelope[JobView], responses=_ERRORS, tags=["jobs"]
)
async def cancel_job(job_id: str, user: User, rt: Rt, request: Request) -> Response:
    """Cancel a queued or running job: answered ``cancelled`` at once; its code never starts, or its
    processes get SIGTERM, then SIGKILL after a grace period; its GPUs are free once they are gone.
    Cancelling a cancelled job answers the same again; one that completed or failed is 409."""
    try:
        job = await rt.jobs.cancel(user, job_id)
    except GpujobsError as exc:
        outcome = f"refused {http_status(exc)}: {exc.message}"
        audit(request, "cancel", user=user.name, outcome=outcome, job_id=job_id[:64])
        raise
    audit(request, "cancel", user=user.name, outcome="cancelled", job_id=job_id, owner=job.user)
    return envelope(rt.jobs.view(job), f"job {job_id} cancelled")


class UsageRow(BaseModel):
    key: str = Field(description="The user, group or GPU type, per group_by.")
    jobs: int
    gpu_seconds: float
    gpu_hours: float
    cpu_seconds: float
    cost: float


class UsageReport(BaseModel):
    group_by: str
    since: datetime
    until: datetime
    rows: list[UsageRow]


@router.get(
    "/api/k8s/usage",
    response_model=Envelope[UsageReport],
    responses={**_ERRORS, 200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with format=csv"}},
    tags=["usage"],
)
async def usage(
    user: User,
    rt: Rt,
    since: Annotated[
        Moment | None, Query(alias="from", description="Start (ISO 8601); 30 days ago by default.")
    ] = None,
    until: Annotated[Moment | None, Query(alias="to", description="End (ISO 8601); now by default.")] = None,
    group_by: Annotated[
        Literal["user", "group", "gpu_type"], Query(description="user, group or gpu_type")
    ] = "user",
    owner: Annotated[str | None, Query(alias="user", description="Admins: one user only.")] = None,
    output: Annotated[Literal["json", "csv"], Query(alias="format")] = "json",
) -> Response:
    """GPU-seconds, CPU-seconds, job counts and cost of jobs that ended in the period.  Users see their own
    usage; admins everyone's (or one user's with ``user=``)."""
    until = _in_range(until, "to") if until else datetime.now(timezone.utc)
    since = _in_range(since, "from") if since else until - timedelta(days=30)
    if since >= until:
        raise InvalidSpec("from must be before to", field="from")
    if owner is not None and owner != user.name and not user.admin:
        raise Forbidden(f"you may see only your own usage (user={user.name})")
    who = owner if owner is not None else (None if user.admin else user.name)
    totals = await rt.store.read(
        lambda s: repo.usage_totals(s, since=since, until=until, group_by=group_by, user=who)
    )
    rows = [
        UsageRow(
            key=t.key,
            jobs=t.jobs,
            gpu_seconds=round(t.gpu_seconds, 3),
            gpu_hours=round(t.gpu_seconds / 3600, 6),
            cpu_seconds=round(t.cpu_seconds, 3),
            cost=round(t.cost, 6),
        )
        for t in totals
    ]
    if output == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow([group_by, *list(UsageRow.model_fields)[1:]])
        for row in rows:
            writer.writerow([row.key, row.jobs, row.gpu_seconds, row.gpu_hours, row.cpu_seconds, row.cost])
        return Response(
            buffer.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="gpujobs-usage-by-{group_by}.csv"'},
        )
    report = UsageReport(group_by=group_by, since=since, until=until, rows=rows)
    return envelope(report, f"usage of {sum(r.jobs for r in rows)} job(s) by {group_by}")


def _iso_only(value: Any) -> Any:
    """A moment is a date (and time) in ISO 8601: not a number of seconds, which pydantic would take."""
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise ValueError(
            "must be a date, or date and time, in ISO 8601 (e.g. 2026-11-30 or 2026-11-30T12:00Z)"
        )
    return value


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
Moment = Annotated[datetime, BeforeValidator(_iso_only)]
_EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
_LATEST = datetime(9000, 1, 1, tzinfo=timezone.utc)


def _in_range(moment: datetime, field: str) -> datetime:
    """The moment in UTC, if it lies where arithmetic and the database can follow (1970 to 9000)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    if not _EARLIEST <= aware <= _LATEST:
        raise InvalidSpec(f"{field} must lie between 1970 and 9000", field=field)
    return aware


_DOCS = (Path(__file__).with_name("docs.html")).read_bytes()


@router.get("/docs", response_class=HTMLResponse, include_in_schema=False)
async def api_docs(rt: Rt) -> Response:
    """Swagger UI from files installed with gpujobs (fastapi-offline's copy); off with api_docs: false."""
    if not rt.settings.api_docs or swagger_ui_folder() is None:
        raise NotFound("the interactive API docs are off here (api_docs); see openapi.json")
    return HTMLResponse(_DOCS)


_PROOF_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": Envelope[ErrorDetail], "description": "The service runs under JupyterHub: no local token"},
    422: _ERRORS[422],
}


@router.get(
    "/api/local/proof", response_model=Envelope[dict[str, str]], responses=_PROOF_ERRORS, tags=["service"]
)
async def local_proof(
    rt: Rt,
    nonce: Annotated[str, Query(pattern="^[0-9a-f]{32,128}$", description="A fresh random hex string.")],
) -> Response:
    """Without a hub: proof that this service holds the token it keeps in its data dir (an HMAC of
    ``nonce``), which the client asks for before it sends that token.  Not found under a hub."""
    if not isinstance(rt.auth, LocalAuthenticator):
        raise NotFound("this service runs under JupyterHub: there is no local token to prove")
    return envelope({"proof": rt.auth.proof(nonce)}, "proof of the local token")


@router.get("/healthz", response_model=Envelope[dict[str, Any]], tags=["service"])
async def healthz(rt: Rt) -> Response:
    """Liveness and readiness, without authentication.  ``status`` is ``degraded``, with ``problems``
    saying why, while the database refuses writes, the executor cannot reach its jobs or the service is
    overloaded (it still answers 200: it works, and recovers by itself)."""
    try:
        counts = await rt.store.read(repo.count_by_status)
    except Exception:
        return failure("the job database does not answer", 503, {"database": "down"})
    inventory = rt.executor.inventory()
    health = assess(rt.store, rt.executor, rt.lag, rt.reconciler.observe_problem)
    return envelope(
        {
            "status": health.status,
            "problems": list(health.problems),
            "event_loop_lag_seconds": round(rt.lag.last, 4),
            "event_loop_lag_max_seconds": round(rt.lag.worst_recent, 4),  # over the last 5 s
            "executor": rt.executor.name,
            "gpu_source": inventory.source,
            "queued": counts[JobStatus.QUEUED],
            "running": counts[JobStatus.RUNNING],
            "version": rt.version,
            # What a submit form offers: the configured names, lowest level first.
            "priorities": sorted(rt.settings.priorities, key=rt.settings.priorities.__getitem__),
            "default_priority": rt.settings.default_priority,
        },
        "; ".join(health.problems) or "ok",
    )


@router.get("/metrics", response_class=Response, tags=["service"])
async def metrics(rt: Rt) -> Response:
    """Prometheus text format."""
    counts = await rt.store.read(repo.count_by_status)
    held: dict[str, set[str]] = {}
    for node, index in holders(rt.live.holding()):
        held.setdefault(node, set()).add(index)
    queued = (entry.priority for entry in rt.live.queue.entries())
    body = rt.metrics.render(counts, rt.executor.inventory(), held, queued, loop_lag=rt.lag.last)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


def _parse_statuses(text: str | None) -> list[JobStatus]:
    if not text:
        return []
    statuses = []
    for part in filter(None, (piece.strip().lower() for piece in text.split(","))):
        try:
            statuses.append(JobStatus(part))
        except ValueError:
            allowed = ", ".join(s.value for s in JobStatus)
            raise InvalidSpec(f"status {part!r} is not a job state; use {allowed}", field="status") from None
    return statuses
