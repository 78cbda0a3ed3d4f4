"""All the processes of one local job, found and ended together, wherever they went.

Where the machine lets us (root, a writable cgroup hierarchy), each job gets its own cgroup, below the
service's own: the kernel then keeps every descendant in it, whatever it does (``setsid``, a double
fork, a cleared environment), enforces the memory limit, and ends the whole group at once.  Tracking
uses cgroup v2 where it can be written, else v1's freezer; the memory limit uses v2's ``memory.max``
where the controller is on, else v1's memory controller.  Without cgroups, a job's processes are the
runner's descendants (the runner is their subreaper, so orphans come back to it) plus every process
that carries the job's id in its environment.

Standard library only: the runner (``python -I -S runner.py``) imports this file too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable, Iterator

PAGE = os.sysconf("SC_PAGE_SIZE")
GROUP_FOLDER = "gpujobs"  # below the service's own cgroup: <hierarchy>/<own path>/gpujobs/<job id>
_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Orphaned descendants (a double fork, ``setsid``) are re-parented to this process, not to init."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _stat_fields(pid: str) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2 :].split()  # fields from the state on: [0] state, [1] ppid


def descendants(ancestor: int) -> list[int]:
    """Every live process below ``ancestor`` (not itself)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(entry.name)
            if fields is not None and fields[0] != b"Z":
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, frontier = [], [ancestor]
    while frontier:
        below = children.get(frontier.pop(), [])
        found.extend(below)
        frontier.extend(below)
    return found


def marked_processes(job_id: str, uid: int | None = None) -> list[int]:
    """Processes that carry ``GPUJOBS_JOB_ID=<job_id>`` in their environment (only ``uid``'s, if given)."""
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


def rss_bytes(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        fields = _stat_fields(str(pid))
        if fields is not None:
            total += int(fields[21]) * PAGE
    return total


def _hierarchies() -> Iterator[tuple[str, str, str]]:
    """(kind, mount point, this process's path in it) for cgroup2 and the v1 freezer and memory."""
    own: dict[str, str] = {}
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as handle:
            for line in handle:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for name in controllers.split(",") if controllers else ["2"]:
                    own[name] = path
        with open("/proc/self/mounts", encoding="utf-8") as handle:
            mounts = [line.split() for line in handle]
    except OSError:
        return
    for fields in mounts:
        mount_point, kind, options = fields[1], fields[2], fields[3].split(",")
        if kind == "cgroup2" and "2" in own:
            yield "v2", mount_point, own["2"]
        elif kind == "cgroup":
            for controller in ("freezer", "memory"):
                if controller in options and controller in own:
                    yield controller, mount_point, own[controller]


def write_quietly(path: str, value: str) -> bool:
    try:
        with open(path, "w", encoding="ascii") as handle:
            handle.write(value)
    except OSError:
        return False
    return True


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read()
    except OSError:
        return ""


class JobGroup:
    """The cgroups of one runner's job (none, where the machine offers none).

    Moving a process into a cgroup waits for the kernel (an RCU grace period: 10-20 ms here), so a
    spare runner makes its group and moves *itself* in while it waits for a job; the job's first
    process is then born inside, and the runner moves back out (``leave``) while the job's code
    starts.  The folders are named after the runner, not the job (a cgroup v2 folder cannot be
    renamed), and recorded in the job folder's runner.json."""

    def __init__(self, folders: dict[str, str], home: dict[str, str] | None = None) -> None:
        self.folders = folders  # kind ("v2", "freezer", "memory") → the group's folder
        self.home = home or {}  # kind → the folder the runner came from (to leave the group)
        self.memory: str | None = None  # which kind enforces the memory limit, if any

    @classmethod
    def create(cls, name: str) -> JobGroup:
        """Make the group's cgroups (as many kinds as the machine allows; none is fine).  ``name`` is
        unique to this runner (its pid and start time): a folder left behind by an earlier runner is
        never reused with its old limits or state."""
        folders: dict[str, str] = {}
        home: dict[str, str] = {}
        for kind, mount_point, own in _hierarchies():
            if kind in folders:
                continue
            origin = os.path.join(mount_point, own.lstrip("/"))
            folder = os.path.join(origin, GROUP_FOLDER, name)
            try:
                os.makedirs(os.path.dirname(folder), exist_ok=True)
                os.mkdir(folder)
            except OSError:
                continue
            if os.path.exists(os.path.join(folder, "cgroup.procs")):
                folders[kind] = folder
                home[kind] = origin
        return cls(folders, home)

    @classmethod
    def recorded(cls, folders: object, name: str) -> JobGroup:
        """The group a runner recorded in runner.json, to end what is left of a vanished runner.  Only
        folders that are exactly ``<a cgroup hierarchy>/…/gpujobs/<name>`` for the runner's own
        ``name`` are taken: never the shared parent, never another runner's."""
        mounts = {kind: mount_point for kind, mount_point, _own in _hierarchies()}
        taken = {}
        if isinstance(folders, dict):
            for kind, folder in folders.items():
                if (
                    kind in mounts
                    and isinstance(folder, str)
                    and os.path.normpath(folder) == folder
                    and folder.startswith(mounts[kind] + "/")
                    and os.path.basename(folder) == name
                    and os.path.basename(os.path.dirname(folder)) == GROUP_FOLDER
                    and os.path.exists(os.path.join(folder, "cgroup.procs"))
                ):
                    taken[kind] = folder
        return cls(taken)

    def limit_memory(self, memory_bytes: int | None) -> None:
        if memory_bytes:
            self._limit_memory(memory_bytes)

    def _limit_memory(self, memory_bytes: int) -> None:
        v2 = self.folders.get("v2")
        if v2:
            # v2 limits memory only where the controller is on in every parent, and it can be turned
            # on only in cgroups without processes of their own (the root is exempt): it works when
            # the service runs in the hierarchy's root cgroup, and fails harmlessly elsewhere (the
            # runner then measures the job's memory itself).
            parent = os.path.dirname(v2)
            for above in (os.path.dirname(parent), parent):
                write_quietly(os.path.join(above, "cgroup.subtree_control"), "+memory")
            if write_quietly(os.path.join(v2, "memory.max"), str(memory_bytes)):
                write_quietly(os.path.join(v2, "memory.swap.max"), "0")
                self.memory = "v2"
                return
        memory = self.folders.get("memory")
        if memory and write_quietly(os.path.join(memory, "memory.limit_in_bytes"), str(memory_bytes)):
            write_quietly(os.path.join(memory, "memory.memsw.limit_in_bytes"), str(memory_bytes))
            self.memory = "memory"
            return
        self.memory = None

    @property
    def tracks(self) -> bool:
        return "v2" in self.folders or "freezer" in self.folders

    def join(self) -> None:
        """Put the calling process into every cgroup of the group (a runner waiting for a job, or a
        child before ``exec``).  A runner keeps only the kinds it could join (``keep_joined``)."""
        me = str(os.getpid())
        for folder in self.folders.values():
            write_quietly(os.path.join(folder, "cgroup.procs"), me)

    def keep_joined(self) -> None:
        """Forget (and remove) the kinds this process is not in after ``join``: nothing may rely on a
        cgroup the job's first process would not be born in."""
        me = os.getpid()
        for kind, folder in list(self.folders.items()):
            if me not in self._members_of(folder):
                del self.folders[kind]
                self.home.pop(kind, None)
                with contextlib.suppress(OSError):
                    os.rmdir(folder)

    def leave(self) -> bool:
        """Move the calling process back where it came from; whether it is out of every cgroup."""
        me = os.getpid()
        for origin in self.home.values():
            write_quietly(os.path.join(origin, "cgroup.procs"), str(me))
        return all(me not in self._members_of(folder) for folder in self.folders.values())

    @staticmethod
    def _members_of(folder: str) -> list[int]:
        return [int(pid) for pid in _read(os.path.join(folder, "cgroup.procs")).split()]

    def members(self) -> list[int]:
        folder = self.folders.get("v2") or self.folders.get("freezer")
        return [] if folder is None else self._members_of(folder)

    def oom_kills(self) -> int:
        """How many processes of the job the kernel has killed for its memory limit so far."""
        if self.memory == "v2":
            text = _read(os.path.join(self.folders["v2"], "memory.events"))
        elif self.memory == "memory":
            text = _read(os.path.join(self.folders["memory"], "memory.oom_control"))
        else:
            return 0
        for line in text.splitlines():
            name, _, count = line.partition(" ")
            if name == "oom_kill" and count.strip().isdigit():
                return int(count)
        return 0

    def kill(self) -> None:
        """End every process in the job's cgroup: at once with ``cgroup.kill`` (v2), else frozen first
        (so none can fork meanwhile) and then killed."""
        v2 = self.folders.get("v2")
        if v2 and write_quietly(os.path.join(v2, "cgroup.kill"), "1"):
            return
        freeze = (
            (os.path.join(v2, "cgroup.freeze"), "1", "0")
            if v2
            else (os.path.join(self.folders["freezer"], "freezer.state"), "FROZEN", "THAWED")
            if "freezer" in self.folders
            else None
        )
        if freeze:
            write_quietly(freeze[0], freeze[1])
        try:
            for _ in range(50):
                pids = self.members()
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                if freeze:
                    write_quietly(freeze[0], freeze[2])  # a frozen process dies only once thawed
                time.sleep(0.01)
        finally:
            if freeze:  # never leave the group frozen: the next process born in it would hang
                write_quietly(freeze[0], freeze[2])

    def remove(self) -> None:
        """Remove the job's cgroups once they are empty (best effort: a leftover folder is harmless)."""
        for folder in self.folders.values():
            with contextlib.suppress(OSError):
                os.rmdir(folder)
