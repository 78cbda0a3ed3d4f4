from helpers import Api, script, wait_for


def test_jobs_are_listed_newest_first_page_by_page_and_filtered(world) -> None:
    service = world.start_in_process(env={"GPUJOBS_ADMISSION_PAUSED": "true"})
    alice = Api(service.client(world.hub.add_user("alice")))
    ids = [alice.submit_ok(**script("print(1)", name=f"job{i}"))["job_id"] for i in range(7)]
    first = alice.http.get("api/k8s/jobs", params={"limit": 3}).json()["data"]
    assert [j["job_id"] for j in first["jobs"]] == ids[::-1][:3]
    second = alice.http.get("api/k8s/jobs", params={"limit": 3, "cursor": first["next_cursor"]}).json()[
        "data"
    ]
    third = alice.http.get("api/k8s/jobs", params={"limit": 3, "cursor": second["next_cursor"]}).json()[
        "data"
    ]
    assert [j["job_id"] for j in second["jobs"] + third["jobs"]] == ids[::-1][3:]
    assert third["next_cursor"] is None
    assert len(alice.jobs(status="queued")) == 7 and alice.jobs(status="running,completed") == []
    paused = wait_for(lambda: (v := alice.status(ids[0]))["queue_position"] and v, what="a scheduling cycle")
    assert paused["message"] == "admission is paused by the administrator"
    assert paused["queue_position"] == 1
