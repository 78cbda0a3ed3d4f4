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
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..config import Settings
from ..datadir import passable_dir
from ..errors import Forbidden
from ..inventory import Device, Inventory, Node
from ..models import JobSpec, JobStatus
from ..quantities import parse_cpu, parse_memory
from ..store.records import JobRecord
from .accounts import find_account, unreachable_folder
from .base import ABSENT, STARTING, Executor, LaunchError, Observation, Phase
from .gpus import discover_nvml, simulated_devices
from .runner import kill_job_processes, signal_job_processes

log = logging.getLogger(__name__)

RUNNER = Path(__file__).with_name("runner.py")
POLL_SECONDS = 0.05
# How long a launched job may take to show its runner before we call it lost (after a restart).
RUNNER_APPEAR_SECONDS = 10.0
UTILIZATION_REFRESH_SECONDS = 5.0
# After the grace period, how long more a stopped job may take before runner and group are killed.
KILL_MARGIN_SECONDS = 1.0
ACCOUNT_ANSWER_SECONDS = 10.0
ACCOUNT_ANSWERS_KEPT = 10_000
RUNNER_ENVIRONMENT = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
# Passed on from the service's environment: a coverage run of the tests measures the runners too.
_RUNNER_PASSES_ON = ("COVERAGE_PROCESS_CONFIG",)
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def runner_environment(service_environment: Mapping[str, str]) -> dict[str, str]:
    """Not the service's environment (it holds the hub token): the runner sets the job's own from
    launch.json."""
    passed = {name: service_environment[name] for name in _RUNNER_PASSES_ON if name in service_environment}
    return {**RUNNER_ENVIRONMENT, **passed}


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


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        content: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:  # written atomically by the runner, so only a file damaged by hand: ignore it
        return None
    return content


def _at(stamp: float | None) -> datetime | None:
    return datetime.fromtimestamp(stamp, timezone.utc) if stamp else None


def _observation_from_result(result: dict[str, Any], started: dict[str, Any] | None) -> Observation:
    reason = result.get("reason")
    status = {"Completed": JobStatus.COMPLETED, "Cancelled": JobStatus.CANCELLED}.get(
        reason or "", JobStatus.FAILED
    )
    return Observation(
        Phase.ENDED,
        status,
        reason=None if status is JobStatus.COMPLETED else reason,
        message=result.get("message"),
        exit_code=result.get("exit_code"),
        attempts=result.get("attempts"),
        started_at=_at(started.get("at")) if started else None,
        finished_at=_at(result.get("at")),
    )


def _is_runner_of(pid: int, job_dir: Path) -> bool:
    """Whether ``pid`` is a runner working in ``job_dir`` (runner.json is the user's to write too)."""
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            argv = handle.read().split(b"\0")
    except OSError:
        return False
    # By the script's name, not its whole path: a service upgraded into another folder still knows
    # the runners its predecessor started.
    return cwd == os.path.realpath(job_dir) and any(arg.endswith(b"/" + RUNNER.name.encode()) for arg in argv)


def _write_new(path: Path, text: str) -> None:
    """A new file (never through a link, never over an existing one)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


class LocalExecutor(Executor):
    name = "local"
    observe_interval = POLL_SECONDS

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.python = resolve_python(settings.job_python)
        self.node_name = socket.gethostname()
        self._devices: list[Device] = []
        self._inventory = Inventory(nodes=(), source="local", updated_at=datetime.now(timezone.utc))
        # Runners this process started (their Popen handles, to reap them); after a restart, runners are
        # found from runner.json instead.
        self._runners: dict[str, subprocess.Popen[bytes]] = {}
        self._stop_asked: dict[str, float] = {}  # job id → when stop was first asked (to escalate)
        self._spare: subprocess.Popen[bytes] | None = None
        self._spare_lock = threading.Lock()
        self._refresh_task: asyncio.Task[None] | None = None
        self._account_answers: dict[str, tuple[float, str | None]] = {}  # user → (until, problem)

    # --- inventory ------------------------------------------------------------------------------

    async def start(self) -> None:
        # Job accounts may pass through to their own work folders, but list and read nothing else (the
        # data folder itself was made so as the service started).
        passable_dir(self.settings.jobs_dir)
        real = (
            await asyncio.to_thread(discover_nvml, self.settings.gpu_type_aliases)
            if self.settings.nvml
            else []
        )
        simulated = simulated_devices(self.settings.simulate_gpus, first_index=len(real))
        self._devices = real + simulated
        self._publish_inventory()
        self._refresh_task = asyncio.create_task(self._refresh_forever(), name="gpujobs-local-gpus")
        await asyncio.to_thread(self._prepare_spare)

    def _publish_inventory(self) -> None:
        kinds = [
            name
            for name, present in (
                ("local", any(not d.simulated for d in self._devices)),
                ("simulated", any(d.simulated for d in self._devices)),
            )
            if present
        ]
        node = Node(
            name=self.node_name,
            devices=tuple(self._devices),
            cpu_cores=self.settings.local_cpu_cores or float(os.cpu_count() or 1),
            memory_bytes=float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")),
        )
        self._inventory = Inventory(
            nodes=(node,), source="+".join(kinds) or "local", updated_at=datetime.now(timezone.utc)
        )

    def inventory(self) -> Inventory:
        return self._inventory

    async def _refresh_forever(self) -> None:
        """Real GPUs are read again every few seconds; simulated ones are confirmed as often, so that
        ``last_updated`` always says how fresh the view is."""
        while True:
            await asyncio.sleep(UTILIZATION_REFRESH_SECONDS)
            if not self.settings.nvml or not any(not d.simulated for d in self._devices):
                self._publish_inventory()  # nothing to read: what is configured holds, as of now
                continue
            try:
                real = await asyncio.to_thread(discover_nvml, self.settings.gpu_type_aliases)
            except Exception:
                log.warning("could not read GPU utilisation from NVML", exc_info=True)
                continue
            if len(real) == sum(1 for d in self._devices if not d.simulated):
                self._devices = real + [d for d in self._devices if d.simulated]
                self._publish_inventory()

    # --- launching ------------------------------------------------------------------------------

    def log_path(self, job_id: str) -> Path:
        return self.settings.jobs_dir / job_id / "output.log"

    def _job_dir(self, job_id: str) -> Path:
        return self.settings.jobs_dir / job_id

    def _work_dir(self, job_id: str) -> Path:
        return self._job_dir(job_id) / "work"

    def account_problem(self, username: str) -> str | None:
        """Asked on every submit: remembered a few seconds (a lookup in the account database costs
        about 0.1 ms, on the event loop); launch asks the database itself again."""
        now = time.monotonic()
        known = self._account_answers.get(username)
        if known is not None and known[0] > now:
            return known[1]
        try:
            find_account(self.settings, username)
        except Forbidden as exc:
            problem: str | None = exc.message
        else:
            problem = None
        if len(self._account_answers) > ACCOUNT_ANSWERS_KEPT:
            self._account_answers.clear()
        self._account_answers[username] = (now + ACCOUNT_ANSWER_SECONDS, problem)
        return problem

    def _environment(self, job: JobRecord, spec: JobSpec, home: Path, work_dir: Path) -> dict[str, str]:
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
            env["PYTHONPATH"] = str(work_dir / "site")
        env.update(spec.environment)
        return env

    def _launch_plan(self, job: JobRecord, job_dir: Path) -> dict[str, Any]:
        """What the runner needs (launch.json).  The job folder is the service's (the runner's state,
        the log); ``work/`` inside it is the job account's own (the inline script, installed
        requirements, the working folder when the user has no home)."""
        spec = job.job_spec
        try:
            account = find_account(self.settings, job.user)
        except Forbidden as exc:  # the configuration changed since it was admitted
            raise LaunchError(exc.message) from exc
        home = self.settings.home_of(job.user)
        work_dir = self._fresh_work_dir(job.job_id)
        if spec.script is not None:
            script_file = work_dir / "script.py"
            _write_new(script_file, spec.script)
            argv = [self.python, str(script_file), *spec.args]
        else:
            assert spec.script_path is not None
            argv = [self.python, spec.script_path, *spec.args]
        cwd = spec.working_dir or (str(home) if home.is_dir() else str(work_dir))
        plan: dict[str, Any] = {
            "job_id": job.job_id,
            "argv": argv,
            "env": self._environment(job, spec, home, work_dir),
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
                # Neither the user's pip configuration nor the environment steers the install: only the
                # operator's options below do.
                "--isolated",
                "--target",
                str(work_dir / "site"),
                "--no-input",
                "--disable-pip-version-check",
                "--no-warn-script-location",
                "--progress-bar",
                "off",
                *self.settings.pip_extra_args,
                *spec.requirements,
            ]
        if account is not None:
            private = unreachable_folder(work_dir.parent)  # work/ itself is the account's own
            if private is not None:
                raise LaunchError(
                    f"the job's account {account.name} cannot reach its folder: {private} is private "
                    "(no o+x); the operator must put data_dir where other accounts can pass through"
                )
            plan.update(uid=account.uid, gid=account.gid, groups=list(account.groups))
            # The folder is root's until its last chown: nothing in it can have been swapped for a link.
            for entry in work_dir.iterdir():
                os.chown(entry, account.uid, account.gid, follow_symlinks=False)
            os.chown(work_dir, account.uid, account.gid, follow_symlinks=False)
        return plan

    def _fresh_work_dir(self, job_id: str) -> Path:
        """The job's work folder, new and the service's (a launch that failed before may have left one
        that its account owns: it is removed, never followed)."""
        work_dir = self._work_dir(job_id)
        if work_dir.is_symlink():
            work_dir.unlink()
        elif work_dir.exists():
            shutil.rmtree(work_dir)
        work_dir.mkdir(mode=0o700)
        return work_dir

    async def launch(self, job: JobRecord) -> None:
        await asyncio.to_thread(self._launch, job)
        self.wake()

    def _launch(self, job: JobRecord) -> None:
        """Idempotent: a job whose launch.json exists was handed to a runner before (or is being): adopt
        it.  launch.json is written last before the runner starts and removed again if the runner could
        not be started, so its presence means "a runner has it or had it"."""
        job_dir = self._job_dir(job.job_id)
        launch_file = job_dir / "launch.json"
        if launch_file.exists() or (job_dir / "cancel").exists():
            return  # handed over before, or stopped before it could be: never start it (again)
        passable_dir(job_dir)
        try:
            plan = self._launch_plan(job, job_dir)
        except (ValueError, KeyError, LookupError) as exc:
            raise LaunchError(f"could not start the job: {exc}") from exc
        temporary = job_dir / "launch.json.tmp"
        temporary.write_text(json.dumps(plan), encoding="utf-8")
        temporary.replace(launch_file)
        try:
            process = self._hand_to_spare(job_dir) or self._start_runner(job_dir)
        except BaseException:
            launch_file.unlink(missing_ok=True)  # no runner has it: nothing of the job can have run
            raise
        self._runners[job.job_id] = process
        self._prepare_spare()

    def _start_runner(self, job_dir: Path | None) -> subprocess.Popen[bytes]:
        """A detached runner (its own session): for ``job_dir``, or a spare waiting on stdin for one."""
        # -I -S: the runner needs only the standard library, and skipping site saves milliseconds.
        argv = [sys.executable, "-I", "-S", str(RUNNER), str(job_dir) if job_dir else "--standby"]
        if not self.settings.job_cgroups:
            argv.append("--no-cgroups")
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
                env=runner_environment(os.environ),
            )
        finally:
            if job_dir:
                log_target.close()  # type: ignore[union-attr]

    def _prepare_spare(self) -> None:
        with self._spare_lock:
            if self._spare is None or self._spare.poll() is not None:
                try:
                    self._spare = self._start_runner(None)
                except OSError:
                    log.warning("could not start a spare runner; jobs start a little slower", exc_info=True)
                    self._spare = None

    def _hand_to_spare(self, job_dir: Path) -> subprocess.Popen[bytes] | None:
        with self._spare_lock:
            spare, self._spare = self._spare, None
        if spare is None or spare.poll() is not None or spare.stdin is None:
            return None
        try:
            spare.stdin.write(f"{job_dir}\n".encode())
            spare.stdin.close()
        except OSError:
            return None
        return spare

    # --- observing -------------------------------------------------------------------------------

    async def observe(self, jobs: Sequence[JobRecord]) -> dict[str, Observation]:
        return await asyncio.to_thread(self._observe_all, [job.job_id for job in jobs])

    def _observe_all(self, job_ids: list[str]) -> dict[str, Observation]:
        seen: dict[str, Observation] = {}
        for job_id in job_ids:
            try:
                seen[job_id] = self._observe(job_id)
            except Exception:  # one job's odd files must not hide the others
                log.exception("local executor: could not observe job %s", job_id)
        return seen

    def _runner_alive(self, job_id: str, job_dir: Path) -> bool | None:
        """True/False, or None while the runner has not yet said who it is."""
        process = self._runners.get(job_id)
        if process is not None:
            if process.poll() is None:
                return True
            del self._runners[job_id]  # reaped
            return False
        info = _read_json(job_dir / "runner.json")
        if info is None:
            return None
        pid = info.get("pid")
        return isinstance(pid, int) and _is_runner_of(pid, job_dir)

    def _observe(self, job_id: str) -> Observation:
        job_dir = self._job_dir(job_id)
        launch_file = job_dir / "launch.json"
        try:
            launched = launch_file.stat().st_mtime
        except FileNotFoundError:
            return ABSENT  # no runner ever had it: nothing of it can have run
        started = _read_json(job_dir / "started.json")
        result = _read_json(job_dir / "result.json")
        if result is not None:
            self._forget(job_id)
            return _observation_from_result(result, started)
        alive = self._runner_alive(job_id, job_dir)
        if alive is None and time.time() - launched < RUNNER_APPEAR_SECONDS:
            return STARTING
        if not alive:
            result = _read_json(job_dir / "result.json")  # it may have written one as it exited
            if result is not None:
                self._forget(job_id)
                return _observation_from_result(result, started)
            return Observation.lost("the job's runner process ended without recording a result")
        if started is None:
            return STARTING
        return Observation(Phase.RUNNING, attempts=started.get("attempt"), started_at=_at(started.get("at")))

    def _forget(self, job_id: str) -> None:
        process = self._runners.pop(job_id, None)
        if process is not None:
            process.poll()  # reap it if it has exited; it exits right after writing its result
        self._stop_asked.pop(job_id, None)

    async def collect(self, job: JobRecord) -> None:
        """A runner that vanished may have left the job's processes behind: end them (a runner that
        recorded a result has ended them itself)."""
        await asyncio.to_thread(self._kill_leftovers, job.job_id)

    def _kill_leftovers(self, job_id: str) -> None:
        # Even when result.json says the job ended: the job folder is the user's to write, and a job
        # could write a result of its own and run on.
        kill_job_processes(job_id, self._job_uid(job_id), self._runner_info(job_id))
        self._forget(job_id)

    def _runner_info(self, job_id: str) -> object:
        """runner.json (written by the runner, in the service's own folder): its pid, start time and
        cgroups, which ``recorded_group`` checks again before any use."""
        return _read_json(self._job_dir(job_id) / "runner.json")

    def _job_uid(self, job_id: str) -> int:
        """The account the job's processes run as (this service's own when none is set)."""
        plan = _read_json(self._job_dir(job_id) / "launch.json") or {}
        uid = plan.get("uid")
        return uid if isinstance(uid, int) else os.geteuid()

    # --- stopping -------------------------------------------------------------------------------

    async def stop(self, job: JobRecord) -> None:
        await asyncio.to_thread(self._stop, job.job_id)

    def _stop(self, job_id: str) -> None:
        """Leave a tombstone (a runner that has not yet started the code never will), send the runner
        SIGTERM (it passes it on to the job at once, and kills the job after the grace period), and
        once the grace period is over, SIGKILL the runner and every process of the job."""
        job_dir = self._job_dir(job_id)
        passable_dir(job_dir)
        (job_dir / "cancel").touch()
        now = time.monotonic()
        first = self._stop_asked.setdefault(job_id, now)
        overdue = now - first > self.settings.kill_grace_seconds + KILL_MARGIN_SECONDS
        if first != now and not overdue:
            return  # asked already; the runner is stopping it within the grace period
        signum = signal.SIGKILL if overdue else signal.SIGTERM
        runner = self._runner_pid(job_id, job_dir)
        if runner is not None:
            _signal(runner, signum)  # it passes SIGTERM on to the job at once, and kills after the grace
        if runner is None or overdue:  # no runner to do it (or it is stuck): do it ourselves
            signal_job_processes(job_id, signum, self._job_uid(job_id), self._runner_info(job_id))

    def _runner_pid(self, job_id: str, job_dir: Path) -> int | None:
        process = self._runners.get(job_id)
        if process is not None:
            return process.pid if process.poll() is None else None
        info = _read_json(job_dir / "runner.json")
        pid = info.get("pid") if info else None
        if isinstance(pid, int) and _is_runner_of(pid, job_dir):
            return pid
        return None

    async def close(self) -> None:
        if self._refresh_task is not None:
            self._refresh_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh_task
        with self._spare_lock:
            spare, self._spare = self._spare, None
        if spare is not None and spare.stdin is not None:
            spare.stdin.close()  # a spare runner exits on end of input
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(spare.wait, 5)
