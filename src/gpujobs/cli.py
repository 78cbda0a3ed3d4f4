"""The ``gpujobs`` command.

Server side (needs the ``[server]`` extra): ``serve`` (the service), ``hub`` (JupyterHub with the
service, on this machine).
User side (a JupyterHub token in the environment): ``submit``, ``status``, ``logs``, ``cancel``,
``list``, ``gpus``.  Errors from the service are printed as their message, never as a traceback; a
followed job that does not complete makes the command exit non-zero.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from .client.client import TERMINAL, ApiError, Client, Job, describe
from .client.tables import jobs_listing, table

EXIT_API_ERROR = 2
EXIT_JOB_FAILED = 1


def _serve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file of options (also GPUJOBS_CONFIG)")
    parser.add_argument(
        "--executor", choices=["local", "kubernetes"], default=None, help="where jobs run (default: local)"
    )
    parser.add_argument("--kubeconfig", default=None, help="for --executor kubernetes (default: in-cluster)")
    parser.add_argument("--data-dir", default=None, help="database, job folders and logs")
    parser.add_argument(
        "--simulate-gpus", default=None, metavar="SPEC", help="add simulated GPUs, e.g. a100-80gb:2,t4:1"
    )
    parser.add_argument("--host", default=None, help="bind address when not run by JupyterHub")
    parser.add_argument("--port", type=int, default=None, help="port when not run by JupyterHub")
    parser.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--local-user",
        default=None,
        metavar="NAME",
        help="without a hub: the one user it serves (default: this account; needed as root)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpujobs", description="Run Python scripts as GPU jobs from JupyterHub."
    )
    parser.add_argument("--url", help="the gpujobs service URL (default: GPUJOBS_URL)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gpujobs service")
    _serve_options(serve)

    hub = commands.add_parser("hub", help="run JupyterHub with gpujobs on this machine")
    hub.add_argument("--port", type=int, default=8000, help="the hub's public port (default 8000)")
    hub.add_argument("--ip", default="127.0.0.1", help="the hub's public address (default 127.0.0.1)")
    hub.add_argument(
        "--data-dir",
        default=None,
        help="hub database, homes, jobs (default /var/lib/gpujobs-hub as root, else ./gpujobs-hub-data)",
    )
    hub.add_argument("--password", default=None, help="the users' shared password (default: generated)")
    hub.add_argument("--admin", action="append", default=[], help="an admin user name (repeatable)")
    hub.add_argument("--executor", choices=["local"], default=None)
    hub.add_argument("--simulate-gpus", default=None, metavar="SPEC", help="e.g. a100-80gb:2,t4:1")

    fake = commands.add_parser(
        "fake-cluster", help="run a simulated Kubernetes GPU cluster (for trying and testing)"
    )
    fake.add_argument("--nodes", default="a100-80gb:8x2,t4:1x4,cpu:0x1", help="TYPE:GPUSxNODES,... ")
    fake.add_argument("--port", type=int, default=6443)
    fake.add_argument("--kubeconfig", default=None, help="write a kubeconfig for it to this file")
    fake.add_argument("--work-dir", default=None, help="where pods' files and logs go")
    fake.add_argument(
        "--other-pods", type=int, default=0, help="running pods of other workloads to fill the nodes with"
    )

    submit = commands.add_parser("submit", help="submit a script as a job")
    submit.add_argument("script", help="path of the Python script; its own arguments go after --")
    submit.add_argument("--name")
    submit.add_argument("--gpus", type=int, default=None, help="number of GPUs (default 0)")
    submit.add_argument("--gpu-type", default=None, help="any, a family (a100) or a sized type (a100-80gb)")
    submit.add_argument("--cpu", default=None, help="CPU cores, e.g. 4 or 500m")
    submit.add_argument("--memory", default=None, help="memory, e.g. 8Gi")
    submit.add_argument(
        "--priority", default=None, help="a priority the service knows (by default: low, normal, high)"
    )
    submit.add_argument(
        "--requirement", "-r", action="append", default=[], help="PEP 508 requirement (repeatable)"
    )
    submit.add_argument("--env", "-e", action="append", default=[], metavar="NAME=VALUE")
    submit.add_argument("--timeout", type=int, default=None, help="seconds before the job is killed")
    submit.add_argument("--retries", type=int, default=None)
    submit.add_argument(
        "--idempotency-key",
        default=None,
        help="any text up to 255 characters: running this command again with the same key gives back "
        "the same job instead of a second one (by default each run is a new submission)",
    )
    submit.add_argument("--follow", "-f", action="store_true", help="stream the logs until the job ends")

    for name, text in (("status", "show a job"), ("cancel", "cancel a job")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("job_id")
    logs = commands.add_parser("logs", help="print a job's output")
    logs.add_argument("job_id")
    logs.add_argument("--follow", "-f", action="store_true")
    logs.add_argument("--tail", type=int, default=None)

    listing = commands.add_parser("list", help="list your jobs")
    listing.add_argument("--status", default=None, help="e.g. queued,running")
    listing.add_argument("--user", default=None, help="admins: another user, or '*' for all")
    listing.add_argument("--limit", type=int, default=50)

    commands.add_parser("gpus", help="show GPU status")
    return parser


def serve_overrides(options: argparse.Namespace) -> dict[str, Any]:
    """The settings ``serve``'s options give (None where an option was not given)."""
    return {
        "executor": options.executor,
        "data_dir": options.data_dir,
        "simulate_gpus": options.simulate_gpus,
        "host": options.host,
        "port": options.port,
        "log_level": options.log_level,
        "kubeconfig": options.kubeconfig,
        "local_user": options.local_user,
    }


def _serve(options: argparse.Namespace) -> int:
    from .service.main import serve

    return serve(config_file=options.config, **serve_overrides(options))


def _fake_cluster(options: argparse.Namespace) -> int:
    from pathlib import Path

    from .testing.fakekube.nodes import SpecError, parse_spec
    from .testing.fakekube.server import FakeCluster

    try:
        parse_spec(options.nodes)
    except SpecError as exc:
        print(f"gpujobs: --nodes: {exc}", file=sys.stderr)
        return EXIT_API_ERROR
    cluster = FakeCluster(
        options.nodes,
        port=options.port,
        work_dir=Path(options.work_dir) if options.work_dir else None,
        other_pods=options.other_pods,
    )
    if options.kubeconfig:
        cluster.write_kubeconfig(Path(options.kubeconfig))
        print(f"gpujobs: kubeconfig written to {options.kubeconfig}")
    print(
        f"gpujobs: simulated cluster ({options.nodes}) on {cluster.url}; pods run as local processes "
        f"(files in {cluster.work_dir})",
        flush=True,
    )
    cluster.run_forever()
    return 0


def _print_job(view: dict[str, Any]) -> None:
    rows = [
        ("job", view["job_id"]),
        ("name", view["name"]),
        ("user", view["user"]),
        ("status", view["status"]),
        ("reason", view.get("reason")),
        ("message", view.get("message")),
        ("queue position", view.get("queue_position")),
        ("gpus", f"{view['gpu_count']} x {view['gpu_type']}" if view["gpu_count"] else "none"),
        ("node / devices", f"{view.get('node') or ''} {','.join(view.get('gpus') or [])}".strip()),
        ("created", view.get("created_at")),
        ("started", view.get("started_at")),
        ("finished", view.get("finished_at")),
        ("exit code", view.get("exit_code")),
    ]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        if value not in (None, ""):
            print(f"{key.ljust(width)}  {value}")


WAITING = frozenset({"queued", "pending"})


def _until_it_starts(job: Job, said: str | None, poll: float = 1.0) -> None:
    """While the job waits, say where it stands and why, once per change (on stderr: stdout is the
    job's output): ``job 3f2a… (train): queued #3 — no free t4: 0 of 1 free``.  ``said``: the line
    printed already, if any."""
    view = job.status()
    while view["status"] in WAITING:
        line = describe(view)
        if line != said:
            print(line, file=sys.stderr, flush=True)
            said = line
        time.sleep(poll)
        view = job.status()


def _follow(client: Client, job_id: str, said: str | None = None) -> int:
    job = client.job(job_id)
    _until_it_starts(job, said)
    for line in job.logs(follow=True):
        sys.stdout.write(line)
        sys.stdout.flush()
    view = job.status()
    while view["status"] not in TERMINAL:  # the stream ends with the job; its record may lag a moment
        view = job.wait(show=False, poll=0.2)
    print(describe(view), file=sys.stderr)
    return 0 if view["status"] == "completed" else EXIT_JOB_FAILED


def _user_command(options: argparse.Namespace) -> int:
    client = Client(options.url)
    command = options.command
    if command == "submit":
        env = {}
        for item in options.env:
            name, sep, value = item.partition("=")
            if not sep:
                raise ApiError(0, f"--env {item!r}: use NAME=VALUE")
            env[name] = value
        args = options.script_args
        job = client.submit(
            options.script,
            name=options.name,
            args=args,
            gpus=options.gpus,
            gpu_type=options.gpu_type,
            cpu=options.cpu,
            memory=options.memory,
            priority=options.priority,
            requirements=options.requirement,
            env=env,
            timeout=options.timeout,
            retries=options.retries,
            idempotency_key=options.idempotency_key,
        )
        print(f"submitted job {job.id}: {describe(job.view)}", file=sys.stderr)
        if options.follow:
            return _follow(client, job.id, said=describe(job.view))
        print(job.id)
        return 0
    if command == "status":
        _print_job(client.job(options.job_id).status())
        return 0
    if command == "cancel":
        print(describe(client.job(options.job_id).cancel()))
        return 0
    if command == "logs":
        if options.follow:
            return _follow(client, options.job_id)
        sys.stdout.write(client.job(options.job_id).logs(tail=options.tail))
        return 0
    if command == "list":
        jobs = client.jobs(user=options.user, status=options.status, limit=options.limit)
        print(jobs_listing([job.view for job in jobs]))
        return 0
    if command == "gpus":
        status = client.gpu_status(nodes=False)  # the summary: one small answer on any cluster
        print(f"{status['available_gpus']} of {status['total_gpus']} GPUs free ({status['source']})")
        by_type = [
            (t["gpu_type"], t["total"], t["available"], t["used"], t.get("queued_demand", 0))
            for t in status["gpu_types"]
        ]
        if by_type:
            print(table(["TYPE", "TOTAL", "FREE", "USED", "QUEUED DEMAND"], by_type))
        return 0
    raise AssertionError(command)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first "--" belongs to the job's script, untouched by our option parsing.
    script_args = words[words.index("--") + 1 :] if "--" in words else []
    words = words[: words.index("--")] if "--" in words else words
    options = build_parser().parse_args(words)
    options.script_args = script_args
    try:
        if options.command == "serve":
            return _serve(options)
        if options.command == "fake-cluster":
            return _fake_cluster(options)
        if options.command == "hub":
            from .hub.launcher import run_hub

            return run_hub(
                port=options.port,
                ip=options.ip,
                data_dir=options.data_dir,
                password=options.password,
                admins=options.admin,
                executor=options.executor,
                simulate_gpus=options.simulate_gpus,
            )
        return _user_command(options)
    except ApiError as exc:
        print(f"gpujobs: {exc.message}", file=sys.stderr)
        return EXIT_API_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from .errors import GpujobsError

        if isinstance(exc, GpujobsError):
            print(f"gpujobs: {exc.message}", file=sys.stderr)
            return EXIT_API_ERROR
        logging.getLogger(__name__).debug("failed", exc_info=True)
        raise


if __name__ == "__main__":
    sys.exit(main())
