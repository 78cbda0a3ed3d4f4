"""The local executor: jobs as processes on this machine, pinned to its GPUs.

Each job gets a directory under ``<data_dir>/jobs/<job_id>`` and a detached runner process
(``runner.py``) that installs its requirements, runs it, enforces its limits and records how it ended.
This executor only starts runners and watches their files, so a restarted service re-attaches to jobs
that kept running (see ``recover``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..config import Settings
from ..inventory import Device, Inventory, Node
from ..models import JobSpec, JobStatus
from ..quantities import parse_cpu, parse_memory
from ..store.records import JobRecord
from .base import EventSink, Executor, JobEvent, LaunchError
from .gpus import discover_nvml, simulated_devices
from .runner import process_start_time

log = logging.getLogger(__name__)

RUNNER = Path(__file__).with_name("runner.py")
POLL_SECONDS = 0.05
# How long a launched job may take to show its runner before we call it lost (after a restart).
RUNNER_APPEAR_SECONDS = 10.0
UTILIZATION_REFRESH_SECONDS = 5.0
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def resolve_python(configured: str | None) -> str:
    """The real interpreter behind ``configured`` (a pyenv shim is a shell script: ask it once)."""
    path = shutil.which(configured) if configured else sys.executable
    if not path:
        raise LaunchError(f"job_python {configured!r} was not found")
    with open(path, "rb") as handle:
        is_script = handle.read(2) == b"#!"
    if not is_script:
        return path
    answer = subprocess.run(
        [path, "-c", "import sys; print(sys.executable)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return answer.stdout.strip()


@dataclass
class _Watched:
    job_id: str
    directory: Path
    status: JobStatus
    process: subprocess.Popen[bytes] | None = None
    pid: int | None = None
    start_time: int | None = None
    since: float = 0.0

    def runner_alive(self) -> bool | None:
        """True/False, or None while the runner has not yet said who it is."""
        if self.process is not None:
            return self.process.poll() is None
        if self.pid is None:
            runner_file = self.directory / "runner.json"
            if not runner_file.exists():
                return None
            info = json.loads(runner_file.read_text())
            self.pid, self.start_time = info["pid"], info["start_time"]
        return process_start_time(self.pid) == self.start_time


def _event_from_result(job_id: str, result: dict[str, Any]) -> JobEvent:
    reason = result.get("reason")
    status = {"Completed": JobStatus.COMPLETED, "Cancelled": JobStatus.CANCELLED}.get(
        reason or "", JobStatus.FAILED
    )
    return JobEvent(
        job_id=job_id,
        status=status,
        reason=None if status is JobStatus.COMPLETED else reason,
        message=result.get("message"),
        exit_code=result.get("exit_code"),
        attempts=result.get("attempts"),
        at=datetime.fromtimestamp(result["at"], timezone.utc) if result.get("at") else None,
    )


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, settings: Settings, on_event: EventSink) -> None:
        super().__init__(on_event)
        self.settings = settings
        self.python = resolve_python(settings.job_python)
        self.node_name = socket.gethostname()
        self._devices: list[Device] = []
        self._inventory = Inventory(nodes=(), source="local", updated_at=datetime.now(timezone.utc))
        self._watched: dict[str, _Watched] = {}
        self._task: asyncio.Task[None] | None = None
        self._kill_tasks: set[asyncio.Task[None]] = set()
        self._spare: subprocess.Popen[bytes] | None = None

    # --- inventory ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.settings.jobs_dir.mkdir(parents=True, exist_ok=True)
        real = (
            await asyncio.to_thread(discover_nvml, self.settings.gpu_type_aliases)
            if self.settings.nvml
            else []
        )
        simulated = simulated_devices(self.settings.simulate_gpus, first_index=len(real))
        self._devices = real + simulated
        self._publish_inventory()
        self._task = asyncio.create_task(self._poll_forever(), name="gpujobs-local-poll")
        self._prepare_spare()

    def _publish_inventory(self) -> None:
        kinds = [
            name
            for name, present in (
                ("local", any(not d.simulated for d in self._devices)),
                ("simulated", any(d.simulated for d in self._devices)),
            )
            if present
        ]
        node = Node(name=self.node_name, devices=tuple(self._devices), cpu_cores=float(os.cpu_count() or 1))
        self._inventory = Inventory(
            nodes=(node,), source="+".join(kinds) or "local", updated_at=datetime.now(timezone.utc)
        )

    def inventory(self) -> Inventory:
        return self._inventory

    async def _refresh_utilization(self) -> None:
        if not self.settings.nvml or not any(not d.simulated for d in self._devices):
            return
        real = await asyncio.to_thread(discover_nvml, self.settings.gpu_type_aliases)
        if len(real) == sum(1 for d in self._devices if not d.simulated):
            self._devices = real + [d for d in self._devices if d.simulated]
            self._publish_inventory()

    # --- launching ------------------------------------------------------------------------------

    def log_path(self, job_id: str) -> Path:
        return self.settings.jobs_dir / job_id / "output.log"

    def _account(self, username: str) -> pwd.struct_passwd | None:
        if not self.settings.run_as_user or os.geteuid() != 0:
            return None
        try:
            account = pwd.getpwnam(username)
        except KeyError:
            return None
        return account if account.pw_uid != 0 else None

    def _environment(self, job: JobRecord, spec: JobSpec, home: Path, job_dir: Path) -> dict[str, str]:
        devices = {device.index: device for device in self._devices}
        simulated = [index for index in job.gpus if devices.get(index) and devices[index].simulated]
        env = {
            "PATH": os.pathsep.join([os.path.dirname(self.python), "/usr/local/bin", "/usr/bin", "/bin"]),
            "HOME": str(home),
            "USER": job.user,
            "LOGNAME": job.user,
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "GPUJOBS_JOB_ID": job.job_id,
            "GPUJOBS_JOB_NAME": job.name,
            "GPUJOBS_USER": job.user,
            "GPUJOBS_GPU_TYPE": job.gpu_type,
            # NVML numbers devices by PCI bus; make CUDA number them the same way.
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            # Empty for CPU jobs: they see no GPU at all.
            "CUDA_VISIBLE_DEVICES": ",".join(job.gpus),
        }
        if simulated:
            env["GPUJOBS_SIMULATED_GPUS"] = ",".join(simulated)
        if spec.cpu_limit:
            threads = str(max(1, math.ceil(parse_cpu(spec.cpu_limit))))
            env.update({name: threads for name in _THREAD_VARIABLES})
        if spec.requirements:
            env["PYTHONPATH"] = str(job_dir / "site")
        env.update(spec.environment)
        return env

    def _launch_plan(self, job: JobRecord, job_dir: Path) -> dict[str, Any]:
        spec = job.job_spec
        home = self.settings.home_of(job.user)
        if spec.script is not None:
            script_file = job_dir / "script.py"
            script_file.write_text(spec.script, encoding="utf-8")
            argv = [self.python, str(script_file), *spec.args]
        else:
            assert spec.script_path is not None
            argv = [self.python, spec.script_path, *spec.args]
        cwd = spec.working_dir or (str(home) if home.is_dir() else str(job_dir))
        plan: dict[str, Any] = {
            "job_id": job.job_id,
            "argv": argv,
            "env": self._environment(job, spec, home, job_dir),
            "cwd": cwd,
            "timeout_seconds": spec.timeout_seconds,
            "memory_limit": spec.memory_limit,
            "memory_bytes": parse_memory(spec.memory_limit) if spec.memory_limit else None,
            "retries": spec.retries,
            "grace_seconds": self.settings.kill_grace_seconds,
            "requirements": spec.requirements,
            "pip_argv": None,
            "uid": None,
        }
        if spec.requirements:
            plan["pip_argv"] = [
                self.python,
                "-m",
                "pip",
                "install",
                "--target",
                str(job_dir / "site"),
                "--no-input",
                "--disable-pip-version-check",
                "--no-warn-script-location",
                "--progress-bar",
                "off",
                *self.settings.pip_extra_args,
                *spec.requirements,
            ]
        account = self._account(job.user)
        if account is not None:
            plan.update(
                uid=account.pw_uid,
                gid=account.pw_gid,
                groups=[g for g in os.getgrouplist(account.pw_name, account.pw_gid) if g != account.pw_gid],
            )
            for path in (job_dir, *job_dir.iterdir()):
                os.chown(path, account.pw_uid, account.pw_gid)
        return plan

    async def launch(self, job: JobRecord) -> None:
        job_dir = self.settings.jobs_dir / job.job_id
        if (job_dir / "launch.json").exists():
            # Launched before (a retry of this call after a restart): never start it twice.
            self._watch(job.job_id, job.status)
            return
        try:
            job_dir.mkdir(parents=True, exist_ok=True)
            plan = self._launch_plan(job, job_dir)
            (job_dir / "launch.json").write_text(json.dumps(plan), encoding="utf-8")
            process = self._hand_to_spare(job_dir) or self._start_runner(job_dir)
        except (OSError, ValueError, KeyError) as exc:
            raise LaunchError(f"could not start the job: {exc}") from exc
        watched = self._watch(job.job_id, job.status)
        watched.process = process
        asyncio.get_running_loop().call_soon(self._prepare_spare)

    @staticmethod
    def _start_runner(job_dir: Path | None) -> subprocess.Popen[bytes]:
        """A detached runner (its own session): for ``job_dir``, or a spare waiting on stdin for one."""
        # -I -S: the runner needs only the standard library, and skipping site saves milliseconds.
        argv = [sys.executable, "-I", "-S", str(RUNNER), str(job_dir) if job_dir else "--standby"]
        log_target = open(job_dir / "runner.log", "ab") if job_dir else subprocess.DEVNULL  # noqa: SIM115
        try:
            return subprocess.Popen(
                argv,
                cwd=job_dir or "/",
                stdin=subprocess.PIPE if job_dir is None else subprocess.DEVNULL,
                stdout=log_target,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            if job_dir:
                log_target.close()  # type: ignore[union-attr]

    def _prepare_spare(self) -> None:
        if self._spare is None or self._spare.poll() is not None:
            try:
                self._spare = self._start_runner(None)
            except OSError:
                log.warning("could not start a spare runner; jobs start a little slower", exc_info=True)
                self._spare = None

    def _hand_to_spare(self, job_dir: Path) -> subprocess.Popen[bytes] | None:
        spare, self._spare = self._spare, None
        if spare is None or spare.poll() is not None or spare.stdin is None:
            return None
        try:
            spare.stdin.write(f"{job_dir}\n".encode())
            spare.stdin.close()
        except OSError:
            return None
        return spare

    def _watch(self, job_id: str, status: JobStatus) -> _Watched:
        watched = self._watched.get(job_id)
        if watched is None:
            watched = _Watched(job_id, self.settings.jobs_dir / job_id, status, since=time.monotonic())
            self._watched[job_id] = watched
        return watched

    # --- watching -------------------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        next_refresh = time.monotonic() + UTILIZATION_REFRESH_SECONDS
        while True:
            try:
                await self._poll_once()
                if time.monotonic() >= next_refresh:
                    next_refresh = time.monotonic() + UTILIZATION_REFRESH_SECONDS
                    await self._refresh_utilization()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep watching whatever one job's files look like
                log.exception("local executor: polling failed")
            await asyncio.sleep(POLL_SECONDS)

    async def _poll_once(self) -> None:
        for watched in list(self._watched.values()):
            await self._check(watched)

    async def _check(self, watched: _Watched) -> None:
        result_file = watched.directory / "result.json"
        started_file = watched.directory / "started.json"
        if watched.status is JobStatus.PENDING and started_file.exists():
            # Reported even when the job has already ended, so its start time is never lost.
            started = json.loads(started_file.read_text())
            watched.status = JobStatus.RUNNING
            await self._emit(
                JobEvent(
                    watched.job_id,
                    JobStatus.RUNNING,
                    attempts=started.get("attempt"),
                    at=datetime.fromtimestamp(started["at"], timezone.utc),
                )
            )
        if result_file.exists():
            result = json.loads(result_file.read_text())
            del self._watched[watched.job_id]
            if watched.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    watched.process.wait(timeout=5)
            await self._emit(_event_from_result(watched.job_id, result))
            return
        alive = watched.runner_alive()
        if alive is None and time.monotonic() - watched.since < RUNNER_APPEAR_SECONDS:
            return
        if not alive and not result_file.exists():
            del self._watched[watched.job_id]
            await self._emit(
                JobEvent(
                    watched.job_id,
                    JobStatus.FAILED,
                    reason="Lost",
                    message="the job's runner process ended without recording a result",
                )
            )

    async def recover(self, active_jobs: Sequence[JobRecord]) -> None:
        for job in active_jobs:
            job_dir = self.settings.jobs_dir / job.job_id
            if not (job_dir / "launch.json").exists():
                # Admitted but never handed to a runner: safe to admit again.
                await self._emit(JobEvent(job.job_id, JobStatus.QUEUED, message="requeued after a restart"))
                continue
            watched = self._watch(job.job_id, job.status)
            await self._check(watched)

    # --- cancelling -----------------------------------------------------------------------------

    async def cancel(self, job: JobRecord) -> None:
        watched = self._watched.get(job.job_id)
        job_dir = self.settings.jobs_dir / job.job_id
        targets = self._signal_targets(watched, job_dir)
        for kind, pid in targets:
            self._signal(kind, pid, signal.SIGTERM)
        task = asyncio.create_task(self._kill_after_grace(targets))
        self._kill_tasks.add(task)
        task.add_done_callback(self._kill_tasks.discard)

    def _signal_targets(self, watched: _Watched | None, job_dir: Path) -> list[tuple[str, int]]:
        targets: list[tuple[str, int]] = []
        if watched is not None and watched.runner_alive():
            pid = watched.process.pid if watched.process is not None else watched.pid
            if pid:
                targets.append(("pid", pid))
        started = job_dir / "started.json"
        if started.exists():
            targets.append(("group", json.loads(started.read_text())["pid"]))
        return targets

    @staticmethod
    def _signal(kind: str, pid: int, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if kind == "group":
                os.killpg(pid, signum)
            else:
                os.kill(pid, signum)

    async def _kill_after_grace(self, targets: list[tuple[str, int]]) -> None:
        await asyncio.sleep(self.settings.kill_grace_seconds + 1)
        for kind, pid in targets:
            self._signal(kind, pid, signal.SIGKILL)

    async def stop(self) -> None:
        spare, self._spare = self._spare, None
        if spare is not None and spare.stdin is not None:
            spare.stdin.close()  # a spare runner exits on end of input
            with contextlib.suppress(subprocess.TimeoutExpired):
                spare.wait(timeout=5)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._kill_tasks):
            # Finish pending kills now rather than leave processes behind.
            task.cancel()
