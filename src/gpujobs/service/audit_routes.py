"""``GET api/k8s/audit``: the audit log, for admins."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from ..errors import Forbidden, InvalidSpec
from ..models import Envelope
from .audit import AuditQuery, audit
from .responses import envelope
from .routes import _ERRORS, Moment, Rt, User, _in_range

router = APIRouter()
MAX_AUDIT_PAGE = 1000


class AuditEntry(BaseModel):
    seq: int
    time: datetime
    user: str | None
    action: str = Field(description="submit, cancel, list-jobs, refused or start")
    job_id: str | None = None
    outcome: str
    client: str | None = Field(None, description="Who sent it (as the hub's proxy saw it, behind it).")
    detail: dict[str, Any] | None = None


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next_cursor: str | None = Field(description="Pass as cursor for the next (older) page.")


@router.get("/api/k8s/audit", response_model=Envelope[AuditPage], responses=_ERRORS, tags=["service"])
async def audit_log(
    user: User,
    rt: Rt,
    request: Request,
    who: Annotated[str | None, Query(alias="user", max_length=300, description="Only this user's.")] = None,
    action: Annotated[str | None, Query(max_length=40, description="Only this action.")] = None,
    since: Annotated[Moment | None, Query(description="Only events from this moment (ISO 8601).")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_AUDIT_PAGE, description="Page size.")] = 100,
    cursor: Annotated[
        str | None, Query(max_length=18, description="next_cursor of the previous page.")
    ] = None,
) -> Response:
    """Audit events, newest first (admins only)."""
    if not user.admin:
        audit(request, "refused", user=user.name, outcome="403: the audit log is for admins")
        raise Forbidden("the audit log is for admins")
    if cursor is not None and not (cursor.isascii() and cursor.isdigit()):
        raise InvalidSpec("cursor is not one this service gave out", field="cursor")
    query = AuditQuery(
        user=who,
        action=action,
        since=_in_range(since, "since") if since else None,
        before_seq=int(cursor) if cursor else None,
        limit=limit,
    )
    entries, next_seq = await asyncio.to_thread(rt.audit.read, query)
    page = AuditPage(
        entries=[AuditEntry.model_validate(entry) for entry in entries],
        next_cursor=str(next_seq) if next_seq is not None else None,
    )
    return envelope(page, f"{len(entries)} event(s)")
