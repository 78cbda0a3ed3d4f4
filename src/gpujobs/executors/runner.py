"""The job runner: a small process that runs one job and records how it ended.

The local executor starts it detached (its own session) as ``python runner.py JOB_DIR``, or ahead of
need as ``python runner.py --standby`` and then writes the job folder to its stdin; it outlives
a restart of the service, which re-attaches by reading the files below.  Standard library only, so it
starts fast and runs under any interpreter.

Files in JOB_DIR:
  launch.json   written by the executor: argv, env, cwd, user, limits, requirements (read here)
  runner.json   written first: {"pid", "start_time", "cgroups"}: lets the service tell this process
                from a later one that reused its pid, and find the job's cgroups if it vanishes
  started.json  the job's code is starting: {"pid", "attempt", "at"}
  output.log    the job's stdout and stderr, plus lines from gpujobs marked "[gpujobs]"
  result.json   written last, atomically: {"reason", "exit_code", "message", "attempts", "at"}
  cancel        written by the executor to stop the job: a runner that finds it never starts the
                job's code (it is checked before every start and while the code runs)
  work/         the job account's own folder (the inline script, installed requirements); all the
                files above are the service's, which the job cannot change

The runner runs as the service's account (root, on a shared machine) and starts the job's processes
as the job's account, in the job's own cgroups where the machine has them (``jobgroup.py``); it is the
subreaper of everything the job starts, and nothing of the job outlives the runner's result.

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
from collections.abc import Callable, Iterable
from typing import Any

if not __package__ and os.environ.get("COVERAGE_PROCESS_CONFIG"):  # pragma: no cover - measuring
    # Run as a script with -S, site-packages and coverage's start-up hook are skipped: load them when
    # the test suite measures, so this process is measured too.  Only the service's environment can
    # ask for it (local.runner_environment).
    import site

    site.main()

POLL = 0.05

if __package__:
    from .jobgroup import JobGroup, become_subreaper, descendants, marked_processes, rss_bytes, write_quietly
else:  # run as a script (python -I -S runner.py): its folder is not on the path
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))
    from jobgroup import JobGroup, become_subreaper, descendants, marked_processes, rss_bytes, write_quietly  # type: ignore[no-redef]


def process_start_time(pid: int) -> int | None:
    """Clock ticks since boot when ``pid`` started (field 22 of /proc/PID/stat), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    return int(data[data.rfind(b")") + 2 :].split()[19])


def recorded_group(runner_info: object) -> JobGroup:
    """The cgroups a runner recorded in its runner.json (checked: only its own folders)."""
    info = runner_info if isinstance(runner_info, dict) else {}
    name = group_name(info.get("pid"), info.get("start_time"))
    return JobGroup.recorded(info.get("cgroups"), name) if name else JobGroup({})


def group_name(pid: object, start_time: object) -> str | None:
    """A runner's cgroups are named after it: its pid and start time never recur together."""
    if isinstance(pid, int) and isinstance(start_time, int):
        return f"runner-{pid}-{start_time}"
    return None


def job_processes(job_id: str, uid: int | None = None, runner_info: object = None) -> list[int]:
    """Every live process of a job that this process can find without its runner: those in the
    cgroups its runner recorded (``runner_info``: runner.json), and those that carry the job's id in
    their environment (only ``uid``'s, when given)."""
    return sorted(set(recorded_group(runner_info).members()) | set(marked_processes(job_id, uid)))


def signal_job_processes(job_id: str, signum: int, uid: int | None = None, runner_info: object = None) -> int:
    """Send ``signum`` to every process of the job; how many there were."""
    pids = job_processes(job_id, uid, runner_info)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)
    return len(pids)


def kill_all(find: Callable[[], Iterable[int]]) -> None:
    """End every process ``find`` names.  First freeze them (SIGSTOP) until a look finds none that is
    not frozen, so that a process forking as fast as it can is caught too, then SIGKILL them all."""
    frozen: set[int] = set()
    for _ in range(100):
        fresh = set(find()) - frozen
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
        left = list(find())
        if not left:
            return
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


def kill_job_processes(job_id: str, uid: int | None = None, runner_info: object = None) -> None:
    """End every process of a job whose runner is gone, and remove its cgroups."""
    group = recorded_group(runner_info)
    group.kill()
    kill_all(lambda: marked_processes(job_id, uid))
    group.remove()


def reap_orphans(keep: int | None) -> None:
    """Collect the exit status of ended descendants that were re-parented to us (we are their
    subreaper), but never of ``keep``: that one's status belongs to its Popen."""
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid == keep:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info.si_pid, 0)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal has no name
        return str(number)


def write_json(path: str, content: dict[str, Any]) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(content, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class Runner:
    def __init__(self, job_dir: str, group: JobGroup, *, inside: bool) -> None:
        self.job_dir = job_dir
        with open(os.path.join(job_dir, "launch.json"), encoding="utf-8") as handle:
            self.launch: dict[str, Any] = json.load(handle)
        self.job_id: str = self.launch["job_id"]
        uid = self.launch.get("uid")
        self.uid: int = os.geteuid() if uid is None else uid
        self.cancelled = False
        self.current: subprocess.Popen[bytes] | None = None  # the process running now (pip or the job)
        self.term_sent = False  # whether it has had its SIGTERM already
        self.oom_kills_before = 0  # the kernel's count of OOM kills in the group when a process started
        self.started = time.monotonic()
        timeout = self.launch.get("timeout_seconds")
        self.deadline = self.started + timeout if timeout else None
        self.log = open(os.path.join(job_dir, "output.log"), "ab", buffering=0)  # noqa: SIM115
        self.group = group
        self.group.limit_memory(self.launch.get("memory_bytes"))
        self.inside = inside  # whether this process is in the group still (its first child is born there)

    def cancel_requested(self) -> bool:
        if not self.cancelled and os.path.exists(os.path.join(self.job_dir, "cancel")):
            self.cancelled = True
        return self.cancelled

    def say(self, text: str) -> None:
        self.log.write(f"[gpujobs] {text}\n".encode())

    def processes(self) -> list[int]:
        """Every live process of the job: its cgroup's members, our descendants (we are their
        subreaper, so a double fork comes back to us) and whatever carries the job's id."""
        # The cgroup when there is one, and the others anyway: a process that did not make it into the
        # cgroup (a failed join) is still found.
        found = set(self.group.members()) | set(descendants(os.getpid()))
        found |= set(marked_processes(self.job_id, self.uid))
        found.discard(os.getpid())  # in the group itself until its first child is born
        return sorted(found)

    def _enter_job(self) -> None:
        """In the child, before exec: into the job's cgroups (as root), then the job's account, then its
        working folder — entered as the job's account, so that a folder swapped for a link after the
        submit check leads nowhere the account could not go itself.  Not Popen's user=/group=/cwd=:
        those act before this runs, as root."""
        if not self.inside:
            self.group.join()
        write_quietly("/proc/self/oom_score_adj", "0")  # the runner's own -1000 is not the job's
        launch = self.launch
        if launch.get("uid") is not None:
            os.setgroups(launch.get("groups") or [])
            os.setgid(launch["gid"])
            os.setuid(launch["uid"])
        try:
            os.chdir(launch["cwd"])
        except OSError as exc:  # stderr is the job's log by now
            os.write(
                2, f"[gpujobs] cannot enter the working folder {launch['cwd']}: {exc.strerror}\n".encode()
            )
            raise

    def _spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        self.term_sent = False
        self.oom_kills_before = self.group.oom_kills()
        try:
            return self._popen(argv)
        finally:
            if self.inside:  # the child is in the group: out, before anything could kill the group
                self.inside = False
                if not self.group.leave():
                    # Stuck inside: killing the group would kill this process.  Find the job's
                    # processes without it, and measure its memory (the kernel limit may still hold).
                    self.say(
                        "could not leave the job's cgroups; the job's processes are tracked without them"
                    )
                    self.group = JobGroup({})

    def _popen(self, argv: list[str]) -> subprocess.Popen[bytes]:
        self.current = subprocess.Popen(
            argv,
            env=self.launch["env"],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            process_group=0,
            close_fds=True,
            umask=0o022,  # the job's files as a login shell would make them (the service's umask is 077)
            preexec_fn=self._enter_job,  # safe: the runner has one thread
        )
        return self.current

    def _signal_all(self, signum: signal.Signals) -> None:
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)

    def stop_now(self) -> None:
        """Called from the SIGTERM handler: the job hears of the stop at once, not at the next look."""
        self.cancelled = True
        process = self.current
        if process is not None and process.poll() is None and not self.term_sent:
            self.term_sent = True
            self._signal_all(signal.SIGTERM)

    def _stop_group(self, process: subprocess.Popen[bytes], first: signal.Signals) -> None:
        """``first`` to every process of the job (one SIGTERM, not two); after the grace period, or at
        once for SIGKILL, everything is killed."""
        if first == signal.SIGTERM:
            if not self.term_sent:  # stop_now may have sent it already
                self.term_sent = True
                self._signal_all(signal.SIGTERM)
            grace_end = time.monotonic() + float(self.launch.get("grace_seconds", 5))
            while time.monotonic() < grace_end and process.poll() is None:
                reap_orphans(process.pid)
                time.sleep(POLL)
        self._end_everything()
        process.wait()

    def _watch(self, process: subprocess.Popen[bytes]) -> str | None:
        """Wait for the process; return why gpujobs stopped it (Cancelled, Timeout, OOMKilled) or None.
        Whatever it started ends with it, even what left its process group or session."""
        try:
            stopped = self._wait(process)
        finally:
            self._end_everything()
        if stopped is None and self.group.oom_kills() > self.oom_kills_before:
            return "OOMKilled"  # the kernel enforced the memory limit as the job ended
        return stopped

    def _end_everything(self) -> None:
        self.group.kill()
        kill_all(self.processes)
        current = self.current
        reap_orphans(current.pid if current is not None and current.returncode is None else None)

    def _wait(self, process: subprocess.Popen[bytes]) -> str | None:
        # Without a kernel limit, the runner polls: the whole tree's resident memory counts.  With one,
        # a process the kernel killed for it ends the whole job, as the poll would have.
        memory_limit = None if self.group.memory else self.launch.get("memory_bytes")
        next_memory_check = 0.0
        while True:
            try:
                process.wait(timeout=POLL)
                # Ended by the stop gpujobs sent the whole job (a cancel): say so, not "Signaled".  A
                # job that ended by itself before any stop was sent ended as it did, cancel or not.
                return "Cancelled" if self.term_sent else None
            except subprocess.TimeoutExpired:
                pass
            reap_orphans(process.pid)
            now = time.monotonic()
            if self.cancel_requested():
                self._stop_group(process, signal.SIGTERM)
                return "Cancelled"
            if self.deadline is not None and now >= self.deadline:
                self._stop_group(process, signal.SIGTERM)
                return "Timeout"
            if now >= next_memory_check and (memory_limit or self.group.memory):
                next_memory_check = now + 0.1
                over = (
                    rss_bytes(self.processes()) > memory_limit
                    if memory_limit
                    else self.group.oom_kills() > self.oom_kills_before
                )
                if over:
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
                    "message": f"killed by signal {_signal_name(-code)}",
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
    # What takes time but needs no job happens before one is handed over (a spare runner waits).
    become_subreaper()
    # The kernel's OOM killer never picks the runner (the job's processes start at 0 again).
    write_quietly("/proc/self/oom_score_adj", "-1000")
    me = os.getpid()
    name = group_name(me, process_start_time(me))
    group = JobGroup.create(name) if name and "--no-cgroups" not in argv else JobGroup({})
    group.join()
    group.keep_joined()
    try:
        job_dir = wait_for_job() if argv[1] == "--standby" else argv[1]
    except BaseException:
        group.leave()
        group.remove()
        raise
    try:
        write_json(
            os.path.join(job_dir, "runner.json"),
            {"pid": me, "start_time": process_start_time(me), "cgroups": group.folders},
        )
        runner = Runner(job_dir, group, inside=True)
        runner.cancelled = bool(stop_asked)
        result = runner.run()
    except Exception as exc:  # the runner must always leave a result behind, and nothing running
        if runner is not None:
            runner.say(f"could not run the job: {exc.__class__.__name__}: {exc}")
            if not runner.inside:
                runner._end_everything()
        result = {
            "reason": "StartError",
            "exit_code": None,
            "message": f"could not start: {exc}",
            "attempts": 0,
        }
    if runner is None or runner.inside:
        group.leave()
    (runner.group if runner is not None else group).remove()
    result["at"] = time.time()
    write_json(os.path.join(job_dir, "result.json"), result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
