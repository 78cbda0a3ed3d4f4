"""Access rules over real HTTP: the service asks the (fake) hub who a token belongs to."""

from helpers import Api, script


def test_no_token_bad_token_and_token_in_url_are_401(world) -> None:
    service = world.start_in_process()
    alice = world.hub.add_user("alice")
    anonymous = service.client(None)
    for response in (
        anonymous.get("api/k8s/jobs"),
        service.client("not-a-token").get("api/k8s/jobs"),
        anonymous.get("api/k8s/jobs", params={"token": alice}),  # never from the URL
        anonymous.get("api/k8s/gpu-status", headers={"Authorization": "Basic abc"}),
    ):
        assert response.status_code == 401, response.text
        body = response.json()
        assert body["success"] is False and body["message"] and "timestamp" in body
        assert alice not in response.text


def test_bearer_and_token_schemes_both_work(world) -> None:
    service = world.start_in_process()
    token = world.hub.add_user("alice")
    http = service.client(None)
    for header in (f"token {token}", f"Bearer {token}"):
        assert http.get("api/k8s/jobs", headers={"Authorization": header}).status_code == 200


def test_scope_and_kind_are_checked(world) -> None:
    service = world.start_in_process()
    no_scope = world.hub.add_user("alice", scopes=("read:users:name!user=alice",))
    other_service = world.hub.add_user("carol", scopes=("access:services!service=other",))
    unfiltered = world.hub.add_user("dave", scopes=("access:services",))  # what an admin's token carries
    service_token = world.hub.add_user("svc", kind="service")
    response = service.client(no_scope).get("api/k8s/jobs")
    assert response.status_code == 403 and "access:services!service=gpujobs" in response.json()["message"]
    assert service.client(other_service).get("api/k8s/jobs").status_code == 403
    assert service.client(unfiltered).get("api/k8s/jobs").status_code == 200
    assert "user tokens only" in service.client(service_token).get("api/k8s/jobs").json()["message"]


def test_hub_down_is_503_for_unknown_tokens_but_cached_ones_still_work(world) -> None:
    service = world.start_in_process()
    known = world.hub.add_user("alice")
    fresh = world.hub.add_user("bob")
    assert service.client(known).get("api/k8s/jobs").status_code == 200
    world.hub.close()
    assert service.client(known).get("api/k8s/jobs").status_code == 200  # cached
    response = service.client(fresh).get("api/k8s/jobs")
    assert response.status_code == 503 and "JupyterHub did not answer" in response.json()["message"]


def test_users_see_only_their_own_jobs_and_admins_see_all(world) -> None:
    service = world.start_in_process(env={"GPUJOBS_ADMIN_GROUPS": "gpu-admins"})
    alice = Api(service.client(world.hub.add_user("alice")))
    bob = Api(service.client(world.hub.add_user("bob")))
    admin = Api(service.client(world.hub.add_user("root-admin", admin=True)))
    group_admin = Api(service.client(world.hub.add_user("ops", groups=("gpu-admins",))))
    job = alice.submit_ok(**script("import time; time.sleep(30)", name="alice-job"))
    job_id = job["job_id"]
    assert job["user"] == "alice"

    for path in (f"api/k8s/job/{job_id}/status", f"api/k8s/job/{job_id}/logs"):
        response = bob.http.get(path)
        assert response.status_code == 404 and "alice" not in response.text
    assert bob.http.post(f"api/k8s/job/{job_id}/cancel").status_code == 404
    assert bob.jobs() == []
    denied = bob.http.get("api/k8s/jobs", params={"user": "alice"})
    assert denied.status_code == 403
    assert bob.http.get("api/k8s/jobs", params={"user": "bob"}).status_code == 200

    assert admin.status(job_id)["name"] == "alice-job"
    assert [j["job_id"] for j in admin.jobs(user="alice")] == [job_id]
    assert [j["job_id"] for j in group_admin.jobs(user="*")] == [job_id]
    cancelled = group_admin.http.post(f"api/k8s/job/{job_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["data"]["status"] == "cancelled"
    assert alice.status(job_id)["message"].startswith("cancelled by ops")


def test_the_owner_is_never_taken_from_the_body(world) -> None:
    service = world.start_in_process()
    mallory = Api(service.client(world.hub.add_user("mallory")))
    response = mallory.submit(**script("print(1)"), user="alice")
    assert response.status_code == 422
    assert response.json()["data"]["errors"][0]["field"] == "user"


def test_groups_come_from_the_hub_when_the_token_cannot_read_them(world) -> None:
    service = world.start_in_process(env={"GPUJOBS_ADMIN_GROUPS": "gpu-admins"})
    token = world.hub.add_user("ops", groups=("gpu-admins",), expose_groups=False)
    assert service.client(token).get("api/k8s/jobs", params={"user": "*"}).status_code == 200
    assert "/hub/api/users/ops" in world.hub.requests  # asked with the service's own token
