"""The audit log over real HTTP: what users and admins do, and what is refused, each one line that
admins (only) can read back."""

from __future__ import annotations

import stat

from helpers import Api, script, wait_for


def test_operations_and_refusals_are_audited_and_only_admins_read_them(world) -> None:
    service = world.start_in_process(env={"GPUJOBS_ADMIN_USERS": "root-admin"})
    alice = Api(service.client(world.hub.add_user("alice")))
    admin = service.client(world.hub.add_user("root-admin", admin=True))
    job = alice.submit_ok(**script("import time; time.sleep(30)"))
    assert alice.http.post("api/k8s/submit-job", json={"name": "x"}).status_code == 422
    assert alice.http.post(f"api/k8s/job/{job['job_id']}/cancel").status_code == 200
    assert service.client(None).get("api/k8s/jobs").status_code == 401
    no_scope = service.client(world.hub.add_user("mallory", scopes=("read:users:name!user=mallory",)))
    assert no_scope.get("api/k8s/jobs").status_code == 403
    assert alice.http.get("api/k8s/jobs", params={"user": "bob"}).status_code == 403
    assert admin.get("api/k8s/jobs", params={"user": "alice"}).status_code == 200
    refused = alice.http.get("api/k8s/audit")
    assert refused.status_code == 403 and "admins" in refused.json()["message"]

    entries = admin.get("api/k8s/audit", params={"limit": 100}).json()["data"]["entries"]
    seen = [(e["action"], e["user"], e["outcome"].split(":")[0], e["job_id"]) for e in reversed(entries)]
    assert seen[0][0] == "start"
    assert seen[1:] == [
        ("submit", "alice", "created", job["job_id"]),
        ("submit", "alice", "refused 422", None),
        ("cancel", "alice", "cancelled", job["job_id"]),
        ("refused", None, "401", None),
        ("refused", None, "403", None),
        ("refused", "alice", "403", None),  # asking for bob's jobs
        ("list-jobs", "root-admin", "ok", None),
        ("refused", "alice", "403", None),  # alice asking for the audit log
    ]
    assert all(e["client"] == "127.0.0.1" for e in entries[:-1])
    assert stat.S_IMODE((service.data_dir / "audit.log").stat().st_mode) == 0o600

    only_alice_submits = admin.get("api/k8s/audit", params={"user": "alice", "action": "submit"}).json()
    assert [e["outcome"] for e in only_alice_submits["data"]["entries"]] == [
        "refused 422: invalid spec",
        "created",
    ]
    page = admin.get("api/k8s/audit", params={"limit": 3}).json()["data"]
    older = admin.get("api/k8s/audit", params={"limit": 3, "cursor": page["next_cursor"]}).json()["data"]
    assert [e["seq"] for e in page["entries"] + older["entries"]] == sorted(
        (e["seq"] for e in entries), reverse=True
    )[:6]
    assert admin.get("api/k8s/audit", params={"cursor": "x1"}).status_code == 422


def test_the_audit_log_survives_a_restart_and_keeps_counting(world) -> None:
    service = world.start_in_process(env={"GPUJOBS_ADMIN_USERS": "root-admin"})
    alice = Api(service.client(world.hub.add_user("alice")))
    alice.submit_ok(**script("print(1)"))
    service.stop()
    again = world.start_in_process(env={"GPUJOBS_ADMIN_USERS": "root-admin"})
    admin = again.client(world.hub.add_user("root-admin", admin=True))
    entries = wait_for(lambda: admin.get("api/k8s/audit").json()["data"]["entries"], what="the audit log")
    assert [e["action"] for e in reversed(entries)] == ["start", "submit", "start"]
    assert [e["seq"] for e in reversed(entries)] == [1, 2, 3]


def test_the_client_is_the_address_the_local_proxy_added_not_one_the_caller_claims(world) -> None:
    # The forwarded address is read by uvicorn (trusted from the local proxy): a real process.
    service = world.start(env={"GPUJOBS_ADMIN_USERS": "root-admin"})
    admin = service.client(world.hub.add_user("root-admin", admin=True))
    # The hub's proxy appends the address it saw; what comes before is the caller's claim.
    forged = {"X-Forwarded-For": "10.9.8.7, 192.0.2.44"}
    assert service.client(None).get("api/k8s/jobs", headers=forged).status_code == 401
    (refused,) = admin.get("api/k8s/audit", params={"action": "refused"}).json()["data"]["entries"]
    assert refused["client"] == "192.0.2.44"
