"""The Kubernetes client's errors sorted into what to do, the cache's freshness, and the pure rules the
executor applies to pods (a pod stuck being created, the warning that says why)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from lightkube.core.exceptions import ApiError, ConfigError, NotReadyError

from gpujobs.executors.kubernetes import executor as kube
from gpujobs.executors.kubernetes.faults import TRANSPORT_ERROR, Verdict, classify, is_client_error
from gpujobs.executors.kubernetes.freshness import OUT_OF_SYNC_GRACE_SECONDS, Freshness
from gpujobs.reconciler.loop import next_launch_delay


def api_error(code: int, message: str = "it went wrong", headers: dict | None = None, **status) -> ApiError:
    """An ApiError as lightkube makes it from an API server's answer."""
    transport = TRANSPORT_ERROR.__module__.split(".")[0]
    module = __import__(transport)
    request = module.Request("POST", "https://cluster.example/apis/batch/v1/namespaces/gpujobs/jobs")
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "message": message,
        **status,
    }
    response = module.Response(code, json=body, headers=headers or {}, request=request)
    return ApiError(request=request, response=response)


@pytest.mark.parametrize(
    ("code", "verdict"),
    [
        (429, Verdict.PASSING),
        (500, Verdict.PASSING),
        (502, Verdict.PASSING),
        (503, Verdict.PASSING),
        (504, Verdict.PASSING),
        (409, Verdict.CONFLICT),
        (404, Verdict.NOT_FOUND),
        (410, Verdict.GONE),
        (403, Verdict.REFUSED),
        (422, Verdict.REFUSED),
    ],
)
def test_api_answers_are_sorted_by_status_and_keep_the_servers_words(code: int, verdict: Verdict) -> None:
    fault = classify(api_error(code, "jobs.batch is forbidden: User cannot create"))
    assert (fault.verdict, fault.status) == (verdict, code)
    assert fault.message == "jobs.batch is forbidden: User cannot create"
    assert fault.passing is (verdict is Verdict.PASSING)


def test_retry_after_comes_from_the_header_or_the_status_and_is_capped() -> None:
    assert classify(api_error(429, headers={"Retry-After": "3"})).retry_after == 3.0
    from_status = api_error(503, details={"retryAfterSeconds": 2})
    assert classify(from_status).retry_after == 2.0
    assert classify(api_error(429, headers={"Retry-After": "86400"})).retry_after == 30.0
    # An HTTP date, or nothing at all: the caller's own backoff decides.
    dated = api_error(429, headers={"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"})
    assert classify(dated).retry_after is None
    assert classify(api_error(500)).retry_after is None


@pytest.mark.parametrize(
    "error",
    [
        TRANSPORT_ERROR("connection refused"),
        ConnectionResetError("reset by peer"),
        asyncio.TimeoutError(),
        NotReadyError("resourceVersion", "not yet"),
    ],
    ids=["transport", "reset", "timeout", "not-ready"],
)
def test_a_conversation_that_broke_is_passing(error: Exception) -> None:
    assert is_client_error(error)
    fault = classify(error)
    assert fault.verdict is Verdict.PASSING and fault.status is None and fault.message


def test_the_transport_base_is_the_one_lightkube_raises_from() -> None:
    # Found through lightkube's own ApiError, whichever HTTP library it speaks through.
    assert issubclass(ApiError, TRANSPORT_ERROR) and TRANSPORT_ERROR.__name__ == "HTTPError"


def test_a_client_misconfiguration_is_refused_and_a_bug_is_not_a_client_error() -> None:
    assert classify(ConfigError("no current context")).verdict is Verdict.REFUSED
    assert not is_client_error(KeyError("status"))  # ours: not to be mistaken for the cluster's trouble


def test_freshness_goes_stale_after_a_lasting_outage_or_a_long_silence() -> None:
    fresh = Freshness(silence_seconds=10, kinds=("Node", "Pod"))
    assert fresh.staleness(0.0) is not None  # nothing listed yet
    fresh.heard("Node", 0.0, 1000.0, synced=True)
    fresh.heard("Pod", 1.0, 1001.0, synced=True)
    assert fresh.staleness(2.0) is None and fresh.synced_at() == 1000.0
    fresh.heard("Node", 5.0, 1005.0)  # an event
    assert fresh.synced_at() == 1001.0  # the oldest word counts
    # A watch that breaks and relists at once is not stale...
    fresh.lost("Pod", 6.0, "connection reset")
    assert fresh.staleness(6.0 + OUT_OF_SYNC_GRACE_SECONDS / 2) is None
    fresh.heard("Pod", 6.2, 1006.2)  # an event on a broken watch proves nothing: not in sync
    stale = fresh.staleness(6.0 + OUT_OF_SYNC_GRACE_SECONDS)
    assert stale is not None and "Pods is down (connection reset)" in stale.reason
    assert stale.synced_at == 1001.0  # last known in sync before the outage
    fresh.heard("Pod", 8.0, 1008.0, synced=True)
    assert fresh.staleness(8.0) is None
    # Silence: the Node watch has said nothing since 5.0.
    assert fresh.deadline("Node") == 15.0
    silent = fresh.staleness(15.5)
    assert silent is not None and "nothing heard about Nodes" in silent.reason


def test_launch_backoff_doubles_honours_retry_after_and_stops_at_the_budget() -> None:
    backoff = (0.2, 10.0)
    assert [next_launch_delay(n, 0.0, backoff, 300, None) for n in (1, 2, 3, 7, 20)] == [
        0.2,
        0.4,
        0.8,
        10.0,
        10.0,
    ]
    assert next_launch_delay(1, 0.0, backoff, 300, retry_after=5.0) == 5.0
    assert next_launch_delay(3, 299.5, backoff, 300, None) is None  # the time allowed is spent
    assert next_launch_delay(1, 0.0, backoff, 0, None) is None  # no retries at all


def _pod(phase: str, bound_ago: float, now: datetime, **status) -> dict:
    bound = (now - timedelta(seconds=bound_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "metadata": {"name": "gpujob-x-abcde", "namespace": "gpujobs", "creationTimestamp": bound},
        "spec": {"nodeName": "node-0"},
        "status": {
            "phase": phase,
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": bound}],
            **status,
        },
    }


def test_a_pod_stuck_being_created_is_found_only_past_the_limit_and_only_if_nothing_ran() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
    creating = {"containerStatuses": [{"name": "job", "state": {"waiting": {"reason": "ContainerCreating"}}}]}
    stuck = _pod("Pending", 700, now, **creating)
    assert kube._stuck_creating([stuck], now, 600) is stuck
    assert kube._stuck_creating([_pod("Pending", 500, now, **creating)], now, 600) is None
    installing = {"initContainerStatuses": [{"name": "requirements", "state": {"running": {}}}]}
    assert kube._stuck_creating([_pod("Pending", 700, now, **installing)], now, 600) is None
    assert kube._stuck_creating([_pod("Running", 700, now)], now, 600) is None
    # Requirements installed long ago, the job's own image still not there: counted from then.
    finished = (now - timedelta(seconds=100)).strftime("%Y-%m-%dT%H:%M:%SZ")
    installed = {
        "initContainerStatuses": [
            {"name": "requirements", "state": {"terminated": {"finishedAt": finished}}}
        ],
        **creating,
    }
    assert kube._stuck_creating([_pod("Pending", 700, now, **installed)], now, 600) is None
    assert kube._stuck_creating([_pod("Pending", 700, now, **installed)], now, 60) is not None
    unbound = _pod("Pending", 700, now, **creating)
    unbound["spec"] = {}
    assert kube._stuck_creating([unbound], now, 600) is None  # waiting for a node is another story


def test_the_newest_event_says_why() -> None:
    events = [
        {
            "type": "Normal",
            "reason": "Scheduled",
            "message": "assigned",
            "lastTimestamp": "2026-12-01T12:00:05Z",
        },
        {
            "type": "Warning",
            "reason": "FailedMount",
            "message": "old",
            "lastTimestamp": "2026-12-01T12:00:09Z",
        },
        {
            "type": "Warning",
            "reason": "FailedMount",
            "message": 'configmap "gpujob-x-script" not found',
            "lastTimestamp": "2026-12-01T12:00:09Z",
        },
    ]
    newest = kube._newest_event(events)
    assert newest is not None  # of two in the same second, the later listed
    assert kube._event_text(newest) == 'FailedMount: configmap "gpujob-x-script" not found'
    assert kube._newest_event([]) is None


@pytest.mark.parametrize(
    ("code", "verdict", "retry_after"),
    [(429, Verdict.PASSING, 7.0), (410, Verdict.GONE, None), (403, Verdict.REFUSED, None)],
)
def test_an_error_answer_lightkube_did_not_decode_is_sorted_the_same(
    code: int, verdict: Verdict, retry_after: float | None
) -> None:
    """lightkube's watch raises its transport's own status error, not an ApiError."""
    module = __import__(TRANSPORT_ERROR.__module__.split(".")[0])
    request = module.Request("GET", "https://cluster.example/api/v1/pods?watch=true")
    body = {"kind": "Status", "code": code, "message": "said by the server"}
    response = module.Response(code, json=body, headers={"Retry-After": "7"}, request=request)
    fault = classify(module.HTTPStatusError("error", request=request, response=response))
    assert (fault.verdict, fault.status, fault.retry_after) == (verdict, code, retry_after)
    assert fault.message == "said by the server"


def test_the_archived_log_completes_what_was_followed_and_never_shrinks_it(tmp_path) -> None:
    log = tmp_path / "output.log"

    def complete(followed: str, whole: str) -> str:
        log.write_text(followed)
        kube._complete_log(log, whole)
        return log.read_text()

    assert complete("line 1\n", "line 1\nline 2\n") == "line 1\nline 2\n"  # what following missed
    # The kubelet has only its newest rotated file: the followed start stays, the new end is added.
    followed = "".join(f"line {i}\n" for i in range(100))
    rotated = "".join(f"line {i}\n" for i in range(60, 120))
    assert complete(followed, rotated) == "".join(f"line {i}\n" for i in range(120))
    assert complete(followed, "line 99\n"[3:]) == followed  # less, and nothing in common: kept
    assert complete("garbled\n", "the whole output\n") == "the whole output\n"  # more: the cluster's
