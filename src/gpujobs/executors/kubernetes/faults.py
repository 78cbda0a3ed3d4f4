"""The one place where what the Kubernetes client raised becomes what gpujobs does about it.  Pure.

Every call to the API server may fail in three ways: the server answered with an error status
(lightkube's ``ApiError``), the conversation broke (refused, reset, timed out: the transport's errors),
or the client itself could not make sense of its configuration.  ``classify`` sorts them into what the
caller should do, so the executor never names a transport library: lightkube's ``ApiError`` derives
from its transport's ``HTTPError``, and that base class is found through it — when lightkube moved
from ``httpx`` to ``httpx2``, code that caught ``httpx.TransportError`` silently stopped retrying.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

from lightkube.core.exceptions import ApiError, ConfigError, LoadResourceError, NotReadyError


def _transport_error_base() -> type[Exception]:
    """The transport's base error class (``HTTPError`` of whatever lightkube speaks HTTP with)."""
    for cls in ApiError.__mro__:
        if cls.__name__ == "HTTPError" and issubclass(cls, Exception):
            return cls
    return OSError  # a lightkube without an HTTPError base: connection trouble still shows as OSError


TRANSPORT_ERROR = _transport_error_base()
# API answers worth trying again: too many requests, the server (or a proxy before it) in trouble.
PASSING_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 30.0  # a Retry-After longer than this is capped: the caller's own deadline rules


class Verdict(str, enum.Enum):
    PASSING = "passing"  # try again later: nothing says the same call will fail again
    CONFLICT = "conflict"  # 409: the object exists already (or changed meanwhile)
    NOT_FOUND = "not-found"  # 404
    GONE = "gone"  # 410: the watch's history is compacted; list again
    REFUSED = "refused"  # the cluster said no and will say so again (403, 422, a bad config)


@dataclass(frozen=True)
class Fault:
    verdict: Verdict
    message: str  # for people: the API server's own words where it gave some
    status: int | None = None  # the HTTP status, when the server answered
    retry_after: float | None = None  # seconds the server asked us to wait (Retry-After)

    @property
    def passing(self) -> bool:
        return self.verdict is Verdict.PASSING


def is_client_error(exc: BaseException) -> bool:
    """Whether ``exc`` is something a Kubernetes client call raises (as opposed to a bug of ours)."""
    return isinstance(
        exc,
        (
            ApiError,
            TRANSPORT_ERROR,
            OSError,
            asyncio.TimeoutError,
            ConfigError,
            LoadResourceError,
            NotReadyError,
        ),
    )


def classify(exc: BaseException) -> Fault:
    """What to do about an exception a client call raised (``is_client_error(exc)`` holds)."""
    if isinstance(exc, ApiError):
        code = exc.status.code or (exc.response.status_code if exc.response is not None else 0)
        message = exc.status.message or exc.status.reason or f"HTTP {code}"
        if code in PASSING_STATUS:
            return Fault(Verdict.PASSING, message, code, _retry_after(exc))
        if code == 409:
            return Fault(Verdict.CONFLICT, message, code)
        if code == 404:
            return Fault(Verdict.NOT_FOUND, message, code)
        if code == 410:
            return Fault(Verdict.GONE, message, code)
        return Fault(Verdict.REFUSED, message, code)
    if isinstance(exc, (ConfigError, LoadResourceError)):
        return Fault(Verdict.REFUSED, f"the Kubernetes client is misconfigured: {exc}")
    if isinstance(exc, NotReadyError):
        return Fault(Verdict.PASSING, str(exc))
    # Refused, reset, timed out, a broken stream: the server may well answer the next time.
    detail = str(exc) or "no detail"
    return Fault(Verdict.PASSING, f"the API server did not answer ({exc.__class__.__name__}: {detail})")


def _retry_after(exc: ApiError) -> float | None:
    """Retry-After in seconds (the header, else the Status's retryAfterSeconds), capped."""
    header = exc.response.headers.get("retry-after") if exc.response is not None else None
    seconds: float | None = None
    if header is not None:
        try:
            seconds = float(header)
        except ValueError:
            seconds = None  # an HTTP date: rare from an API server; the caller's backoff applies
    if seconds is None and exc.status.details is not None:
        seconds = exc.status.details.retryAfterSeconds
    if seconds is None or seconds < 0:
        return None
    return min(float(seconds), MAX_RETRY_AFTER)
