"""The job runner: a small process that runs one job and records how it ended.

The local executor starts it detached (its own session) as ``python runner.py JOB_DIR``, or ahead of
need as ``python runner.py --standby`` and then writes the job folder to its stdin; it outlives
a restart of the service, which re-attaches by reading the files below.  Standard library only, so it
starts fast and runs under any interpreter.

Files in JOB_DIR:
  launch.json   written by the executor: argv, env, cwd, user, limits, requirements (read here)
  runner.json   written first: {"pid", "start_time"}: lets the service tell this process from a
                later one that reused its pid
  started.json  the job's code is starting: {"pid", "attempt", "at"}
  output.log    the job's stdout and stderr, plus lines from gpujobs marked "[gpujobs]"
  result.json   written last, atomically: {"reason", "exit_code", "message", "attempts", "at"}
  cancel        written by the executor to stop the job: a runner that finds it never starts the
                job's code (it is checked before every start and while the code runs)

Nothing here goes through a shell: argv lists only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")
POLL = 0.05


def process_start_time(pid: int) -> int | None:
    """Clock ticks since boot when ``pid`` started (field 22 of /proc/PID/stat), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    return int(data[data.rfind(b")") + 2 :].split()[19])


def group_members(pgid: int) -> Iterator[tuple[str, list[bytes]]]:
    """(pid, the fields of /proc/PID/stat after the name) of every process in a process group."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        if int(fields[2]) == pgid:
            yield entry.name, fields


def group_rss_bytes(pgid: int) -> int:
    """Resident memory of every process in a process group (the job and what it started)."""
    return sum(int(fields[21]) * PAGE for _pid, fields in group_members(pgid))


def job_processes(job_id: str, uid: int | None = None) -> list[int]:
    """Every live process of a job, wherever it went (a new session, a new process group): they all
    carry the job's id in their environment, which gpujobs sets and no other process has.  Only
    processes of ``uid`` (the job's account) are looked into, when it is given.

    (A process that clears its environment is not found: only a cgroup per job would find it.)"""
    marker = f"GPUJOBS_JOB_ID={job_id}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if uid is not None and entry.stat().st_uid != uid:
                continue
            with open(f"/proc/{entry.name}/environ", "rb") as handle:
                environment = handle.read()  # empty for a zombie: it is gone already
        except OSError:
            continue
        if marker in environment.split(b"\0"):
            found.append(int(entry.name))
    return found


def signal_job_processes(job_id: str, signum: int, uid: int | None = None) -> int:
    """Send ``signum`` to every process of the job; how many there were."""
    pids = job_processes(job_id, uid)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)
    return len(pids)


def kill_job_processes(job_id: str, uid: int | None = None) -> None:
    """End every process of the job.  First freeze them (SIGSTOP) until a look finds none that is not
    frozen, so that a process forking as fast as it can is caught too, then SIGKILL them all."""
    frozen: set[int] = set()
    for _ in range(100):
        fresh = set(job_processes(job_id, uid)) - frozen
        if not fresh:
            break
        for pid in fresh:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGSTOP)
        frozen |= fresh
    for pid in frozen:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    for _ in range(20):  # whatever slipped through meanwhile
        if not signal_job_processes(job_id, signal.SIGKILL, uid):
            return
        time.sleep(0.01)


def write_json(path: str, content: dict[str, Any]) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(content, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class Runner:
    def __init__(self, job_dir: str) -> None:
        self.job_dir = job_dir
        with open(os.path.join(job_dir, "launch.json"), encoding="utf-8") as handle:
            self.launch: dict[str, Any] = json.load(handle)
        self.cancelled = False
        self.current: subprocess.Popen[bytes] | None = None  # the process running now (pip or the job)
        self.term_sent = False  # whether it has had its SIGTERM already
        self.started = time.monotonic()
        timeout = self.launch.get("timeout_seconds")
        self.deadline = self.started + timeout if timeout else None
        self.log = open(os.path.join(job_dir, "output.log"), "ab", buffering=0)  # noqa: SIM115

    def cancel_requested(self) -> bool:
        if not self.cancelled and os.path.exists(os.path.join(self.job_dir, "cancel")):
            self.cancelled = True
        return self.cancelled

    def say(self, text: str) -> None:
        self.log.write(f"[gpujobs] {text}\n".encode())

    def _spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        launch = self.launch
        kwargs: dict[str, Any] = {}
        if launch.get("uid") is not None:
            kwargs.update(user=launch["uid"], group=launch["gid"], extra_groups=launch.get("groups") or [])
        self.term_sent = False
        self.current = subprocess.Popen(
            argv,
            cwd=launch["cwd"],
            env=launch["env"],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            process_group=0,
            close_fds=True,
            **kwargs,
        )
        return self.current

    def stop_now(self) -> None:
        """Called from the SIGTERM handler: the job hears of the stop at once, not at the next look."""
        self.cancelled = True
        process = self.current
        if process is not None and process.poll() is None and not self.term_sent:
            self.term_sent = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)

    def _stop_group(self, process: subprocess.Popen[bytes], first: signal.Signals) -> None:
        try:
            if not (first == signal.SIGTERM and self.term_sent):  # one SIGTERM, not two
                os.killpg(process.pid, first)
                self.term_sent = self.term_sent or first == signal.SIGTERM
        except ProcessLookupError:
            return
        if first != signal.SIGKILL:
            grace_end = time.monotonic() + float(self.launch.get("grace_seconds", 5))
            while time.monotonic() < grace_end and process.poll() is None:
                time.sleep(POLL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def _watch(self, process: subprocess.Popen[bytes]) -> str | None:
        """Wait for the process; return why gpujobs stopped it (Cancelled, Timeout, OOMKilled) or None.
        Whatever it started ends with it, even what left its process group."""
        try:
            return self._wait(process)
        finally:
            self._end_leftovers(process)

    def _end_leftovers(self, process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        uid = self.launch.get("uid")
        kill_job_processes(self.launch["job_id"], os.geteuid() if uid is None else uid)

    def _wait(self, process: subprocess.Popen[bytes]) -> str | None:
        memory_limit = self.launch.get("memory_bytes")
        next_memory_check = 0.0
        while True:
            try:
                process.wait(timeout=POLL)
                # Ended by the stop gpujobs sent the whole job (a cancel): say so, not "Signaled".
                return "Cancelled" if self.cancel_requested() else None
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if self.cancel_requested():
                self._stop_group(process, signal.SIGTERM)
                return "Cancelled"
            if self.deadline is not None and now >= self.deadline:
                self._stop_group(process, signal.SIGTERM)
                return "Timeout"
            if memory_limit and now >= next_memory_check:
                next_memory_check = now + 0.1
                if group_rss_bytes(process.pid) > memory_limit:
                    self._stop_group(process, signal.SIGKILL)
                    return "OOMKilled"

    def install_requirements(self) -> dict[str, Any] | None:
        pip_argv = self.launch.get("pip_argv")
        if not pip_argv or self.cancel_requested():
            return None
        self.say("installing requirements: " + " ".join(self.launch.get("requirements", [])))
        process = self._spawn(pip_argv)
        stopped = self._watch(process)
        if stopped:
            return {
                "reason": stopped,
                "exit_code": None,
                "message": f"stopped while installing requirements ({stopped})",
            }
        if process.returncode != 0:
            self.say(f"pip failed with exit code {process.returncode}")
            return {
                "reason": "RequirementsFailed",
                "exit_code": process.returncode,
                "message": "installing the requirements failed; the job's log has pip's output",
            }
        self.say("requirements installed")
        return None

    def run(self) -> dict[str, Any]:
        failed_install = self.install_requirements()
        if failed_install:
            return {**failed_install, "attempts": 0}
        attempts_allowed = 1 + int(self.launch.get("retries", 0))
        outcome: dict[str, Any] = {}
        for attempt in range(1, attempts_allowed + 1):
            if self.cancel_requested():  # before its code starts: it never will
                return {
                    "reason": "Cancelled",
                    "exit_code": None,
                    "message": "cancelled",
                    "attempts": attempt - 1,
                }
            if attempt > 1:
                self.say(f"attempt {attempt} of {attempts_allowed}")
            process = self._spawn(self.launch["argv"])
            write_json(
                os.path.join(self.job_dir, "started.json"),
                {"pid": process.pid, "attempt": attempt, "at": time.time()},
            )
            stopped = self._watch(process)
            code = process.returncode
            exit_code = code if code >= 0 else 128 - code
            if stopped is None and code == 0:
                return {"reason": "Completed", "exit_code": 0, "message": None, "attempts": attempt}
            if stopped == "Cancelled":
                return {
                    "reason": "Cancelled",
                    "exit_code": exit_code,
                    "message": "cancelled",
                    "attempts": attempt,
                }
            if stopped == "Timeout":
                timeout = self.launch.get("timeout_seconds")
                return {
                    "reason": "Timeout",
                    "exit_code": exit_code,
                    "attempts": attempt,
                    "message": f"killed after its timeout of {timeout} s",
                }
            if stopped == "OOMKilled":
                outcome = {
                    "reason": "OOMKilled",
                    "exit_code": exit_code,
                    "attempts": attempt,
                    "message": "killed for using more than its memory limit "
                    f"({self.launch.get('memory_limit')})",
                }
            elif code < 0:
                outcome = {
                    "reason": "Signaled",
                    "exit_code": exit_code,
                    "attempts": attempt,
                    "message": f"killed by signal {signal.Signals(-code).name}",
                }
            else:
                outcome = {
                    "reason": "NonZeroExit",
                    "exit_code": exit_code,
                    "attempts": attempt,
                    "message": f"exited with code {exit_code}",
                }
            self.say(outcome["message"])
        return outcome


def wait_for_job() -> str:
    """Standby mode: the executor starts a runner ahead of need and hands it a job folder later.

    Saves a whole interpreter start on the way from submit to the job's code.  When the service goes
    away first, stdin closes and the spare runner just exits.
    """
    line = sys.stdin.readline().strip()
    if not line:
        raise SystemExit(0)
    sys.stdin.close()
    os.chdir(line)
    log_fd = os.open(os.path.join(line, "runner.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    return line


def main(argv: list[str]) -> int:
    stop_asked = []

    def _on_term(_signum: int, _frame: Any) -> None:
        stop_asked.append(True)
        if runner is not None:
            runner.stop_now()

    # Before the service can know this process (runner.json): a stop is never missed.
    runner: Runner | None = None
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    job_dir = wait_for_job() if argv[1] == "--standby" else argv[1]
    write_json(
        os.path.join(job_dir, "runner.json"),
        {"pid": os.getpid(), "start_time": process_start_time(os.getpid())},
    )
    runner = Runner(job_dir)
    runner.cancelled = bool(stop_asked)
    try:
        result = runner.run()
    except Exception as exc:  # the runner must always leave a result behind
        runner.say(f"could not run the job: {exc.__class__.__name__}: {exc}")
        result = {
            "reason": "StartError",
            "exit_code": None,
            "message": f"could not start: {exc}",
            "attempts": 0,
        }
    result["at"] = time.time()
    write_json(os.path.join(job_dir, "result.json"), result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
