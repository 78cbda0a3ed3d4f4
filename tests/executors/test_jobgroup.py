"""A job's cgroups on this machine (root and a writable hierarchy needed): what a recorded group may
name, and that ending a group never leaves it frozen."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from gpujobs.executors.jobgroup import JobGroup

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make cgroups")


@pytest.fixture
def group() -> JobGroup:
    made = JobGroup.create(f"runner-test-{os.getpid()}-{time.monotonic_ns()}")
    if not made.folders:
        pytest.skip("no writable cgroup hierarchy here")
    yield made
    made.kill()
    made.remove()


def test_a_recorded_group_is_only_the_runners_own_folder(group: JobGroup) -> None:
    name = os.path.basename(next(iter(group.folders.values())))
    assert JobGroup.recorded(dict(group.folders), name).folders == group.folders
    parents = {kind: os.path.dirname(folder) for kind, folder in group.folders.items()}
    assert JobGroup.recorded(parents, name).folders == {}  # never the shared gpujobs folder
    assert JobGroup.recorded({k: f + "/." for k, f in group.folders.items()}, name).folders == {}
    assert JobGroup.recorded(dict(group.folders), "runner-1-2").folders == {}  # another runner's name
    swapped = {"memory": group.folders.get("v2", "/sys/fs/cgroup")} if "v2" in group.folders else {}
    assert JobGroup.recorded(swapped, name).folders == {}  # a folder of another kind's hierarchy
    assert JobGroup.recorded("not a mapping", name).folders == {}


def test_ending_a_group_by_freezing_kills_its_processes_and_never_leaves_it_frozen(group: JobGroup) -> None:
    if "freezer" not in group.folders:
        pytest.skip("no cgroup v1 freezer here")
    frozen_way = JobGroup({"freezer": group.folders["freezer"]})  # as without cgroup.kill (v1, old v2)
    child = subprocess.Popen(["sleep", "300"], preexec_fn=frozen_way.join)
    assert frozen_way.members() == [child.pid]
    frozen_way.kill()
    assert child.wait(timeout=10) == -9
    frozen_way.kill()  # an empty group: frozen, and thawed again
    with open(os.path.join(group.folders["freezer"], "freezer.state")) as state:
        assert state.read().strip() == "THAWED"
    later = subprocess.Popen(["true"], preexec_fn=frozen_way.join)  # would hang in a frozen group
    assert later.wait(timeout=10) == 0
