"""Installs come from lock files (requirements/*.lock, made by scripts/lock.sh): every dependency that
pyproject.toml declares for an install is pinned there, at a version its specifier allows, with hashes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def pinned(lock: Path) -> dict[str, tuple[Version, int]]:
    """name → (version, how many hashes) of each package in a lock file."""
    found = {}
    for block in re.split(r"\n(?=\S)", lock.read_text()):
        match = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", block)
        if match:
            found[canonicalize_name(match[1])] = (Version(match[2]), block.count("--hash=sha256:"))
    return found


def declared(extras: list[str]) -> list[Requirement]:
    """gpujobs' own requirements with these extras, following gpujobs[...] references."""
    wanted, seen, found = list(extras), set(), [Requirement(r) for r in PROJECT["dependencies"]]
    while wanted:
        extra = wanted.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in PROJECT["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == "gpujobs":
                wanted.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


@pytest.mark.parametrize(
    ("lock", "extras"),
    [("dev.lock", ["dev"]), ("service.lock", ["server", "kubernetes", "postgres"])],
)
def test_every_declared_dependency_is_locked_within_its_range_with_hashes(
    lock: str, extras: list[str]
) -> None:
    locked = pinned(REPO / "requirements" / lock)
    assert locked and all(hashes >= 1 for _version, hashes in locked.values())
    for requirement in declared(extras):
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in {lock}: run scripts/lock.sh"
        version, _hashes = locked[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock} pins {name}=={version}, outside {requirement}: run scripts/lock.sh"
        )
    assert "setuptools" in locked  # gpujobs itself is built with it, without build isolation
    assert "pip" in locked  # installed first: the pip a venv or an image starts with may be too old


def test_setup_and_the_service_image_install_from_the_locks() -> None:
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "--require-hashes -r requirements/dev.lock" in setup
    assert setup.index("/^pip==/") < setup.index("-r requirements/dev.lock")  # the locked pip first
    dockerfile = (REPO / "deploy" / "docker" / "service" / "Dockerfile").read_text()
    assert "--require-hashes -r /opt/gpujobs/requirements/service.lock" in dockerfile
    assert dockerfile.index("/^pip==/") < dockerfile.index("-r /opt/gpujobs/requirements/service.lock")
    extras = re.search(r"/opt/gpujobs\[([a-z,]+)\]", dockerfile)
    assert extras is not None and set(extras[1].split(",")) == {"server", "kubernetes", "postgres"}
