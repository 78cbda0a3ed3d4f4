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
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightkube.core.exceptions import ApiError, ConfigError, LoadResourceError, NotReadyError


def _transport_error_base() -> type[Exception]:
    """The transport's base error class (``HTTPError`` of whatever lightkube speaks HTTP with)."""
    for cls in ApiError.__mro__:
        if cls.__name__ == "HTTPError" and issubclass(cls, Exception):
            return cls
    return OSError  # a lightkube without an HTTPError base: connection trouble still shows as OSError


def _status_error_base() -> type[Exception]:
    """The transport's error for an answer with an error status (``ApiError``'s own base): lightkube's
    watch raises it as it is, not as an ``ApiError``."""
    for cls in ApiError.__mro__[1:]:
        if cls.__name__ == "HTTPStatusError" and issubclass(cls, Exception):
            return cls
    return ApiError


TRANSPORT_ERROR = _transport_error_base()
STATUS_ERROR = _status_error_base()
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
        details = exc.status.details
        status_retry = details.retryAfterSeconds if details is not None else None
        return _by_status(code, message, _headers_of(exc), status_retry)
    if isinstance(exc, STATUS_ERROR):  # an error answer that lightkube did not decode (its watch)
        response = getattr(exc, "response", None)
        code = response.status_code if response is not None else 0
        said, said_retry = _status_body(response)
        return _by_status(code, said or f"HTTP {code}", _headers_of(exc), said_retry)
    if isinstance(exc, (ConfigError, LoadResourceError)):
        return Fault(Verdict.REFUSED, f"the Kubernetes client is misconfigured: {exc}")
    if isinstance(exc, NotReadyError):
        return Fault(Verdict.PASSING, str(exc))
    # Refused, reset, timed out, a broken stream: the server may well answer the next time.
    detail = str(exc) or "no detail"
    return Fault(Verdict.PASSING, f"the API server did not answer ({exc.__class__.__name__}: {detail})")


def _by_status(code: int, message: str, headers: Mapping[str, str], status_retry: float | None) -> Fault:
    if code in PASSING_STATUS:
        return Fault(Verdict.PASSING, message, code, _retry_after(headers, status_retry))
    verdict = {409: Verdict.CONFLICT, 404: Verdict.NOT_FOUND, 410: Verdict.GONE}.get(code, Verdict.REFUSED)
    return Fault(verdict, message, code)


def _headers_of(exc: BaseException) -> Mapping[str, str]:
    response = getattr(exc, "response", None)
    return response.headers if response is not None else {}


def _status_body(response: Any) -> tuple[str | None, float | None]:
    """The message and retryAfterSeconds of a Kubernetes Status body, where the answer has one."""
    try:
        body = json.loads(response.content) if response is not None else None
    except Exception:  # not read (a streamed answer), or not JSON: the status code says enough
        return None, None
    if not isinstance(body, dict):
        return None, None
    details = body.get("details")
    retry = details.get("retryAfterSeconds") if isinstance(details, dict) else None
    message = body.get("message") or body.get("reason")
    return (str(message) if message else None), (float(retry) if isinstance(retry, (int, float)) else None)


def _retry_after(headers: Mapping[str, str], status_retry: float | None) -> float | None:
    """Retry-After in seconds (the header, else the Status's retryAfterSeconds), capped."""
    header = headers.get("retry-after")
    seconds: float | None = None
    if header is not None:
        try:
            seconds = float(header)
        except ValueError:
            seconds = None  # an HTTP date: rare from an API server; the caller's backoff applies
    if seconds is None:
        seconds = status_retry
    if seconds is None or seconds < 0:
        return None
    return min(float(seconds), MAX_RETRY_AFTER)
