"""The service on PostgreSQL (the Kubernetes deployments' database): submit, run, list, usage, restart."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from helpers import Api, script


def test_the_service_runs_on_postgresql(world, postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    env = {"GPUJOBS_DATABASE_URL": postgres_url}
    service = world.start("--simulate-gpus", "t4:1", env=env)
    alice = Api(service.client(world.hub.add_user("alice")))
    job = alice.submit_ok(**script("print('on postgres')", gpu_count=1))
    assert alice.wait_status(job["job_id"], "completed")["exit_code"] == 0
    assert alice.logs(job["job_id"]) == "on postgres\n"
    usage = alice.http.get("api/k8s/usage").json()["data"]["rows"]
    assert [row["key"] for row in usage] == ["alice"]
    service.stop()
    again = world.start("--simulate-gpus", "t4:1", env=env, data_dir=service.data_dir)
    alice = Api(again.client(world.hub.add_user("alice")))
    assert [j["job_id"] for j in alice.jobs()] == [job["job_id"]]
