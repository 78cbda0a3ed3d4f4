"""Domain errors, and the one table that maps them to HTTP status codes.

Code below the service raises these; the service turns them into ``{"success": false, ...}`` answers
with the status from ``HTTP_STATUS``.  Messages are written for the person who sent the request.
"""

from __future__ import annotations


class GpujobsError(Exception):
    """Base of every error a caller may see; ``message`` is shown to them as it is."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidSpec(GpujobsError):
    """The job spec or a query is wrong; ``field`` names the part."""


class PayloadTooLarge(GpujobsError):
    """The request body (an inline script, say) is over the configured size."""


class NotAuthenticated(GpujobsError):
    """No token, or one the hub does not know."""


class Forbidden(GpujobsError):
    """A valid token without the right to do this."""


class NotFound(GpujobsError):
    """Nothing here (a page turned off by configuration, say)."""


class JobNotFound(NotFound):
    """No such job, or one the caller may not see (we do not reveal which)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r}")
        self.job_id = job_id


class IllegalTransition(GpujobsError):
    """A state change the job's life does not allow (cancelling a finished job, say)."""


class LimitExceeded(GpujobsError):
    """Over a rate or quota limit that waiting will not fix by itself."""


class DependencyUnavailable(GpujobsError):
    """The hub, the database or the cluster does not answer."""


HTTP_STATUS: dict[type[GpujobsError], int] = {
    InvalidSpec: 422,
    PayloadTooLarge: 413,
    NotAuthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    IllegalTransition: 409,
    LimitExceeded: 429,
    DependencyUnavailable: 503,
}


def http_status(error: GpujobsError) -> int:
    for cls in type(error).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500
