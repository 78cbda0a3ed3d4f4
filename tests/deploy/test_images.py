"""The Dockerfiles cannot be built here (no Docker engine): check what they can be checked for."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO / "deploy" / "docker").glob("*/Dockerfile"))


def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_there_is_an_image_for_each_role() -> None:
    assert {p.parent.name for p in DOCKERFILES} == {"singleuser", "runtime-cpu", "runtime-gpu", "service"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_bases_are_pinned_and_copies_exist(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    for word, rest in steps:
        if word == "FROM":
            image = rest.split()[0]
            assert ":" in image and not image.endswith(":latest"), f"{image} is not pinned by tag"
        if word == "COPY":
            *sources, _target = rest.split()
            for source in sources:
                assert (REPO / source).exists(), f"{dockerfile}: COPY {source} does not exist"
    assert any(word == "USER" for word, _ in steps), "images must not run as root"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_the_package_installed_is_this_one(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    copied = {rest.split()[-1].rstrip("/") for word, rest in steps if word == "COPY"}
    installs = " ".join(rest for word, rest in steps if word == "RUN" and "pip install" in rest)
    assert "/opt/gpujobs" in copied
    assert re.search(r'"?/opt/gpujobs(\[[a-z,]+\])?"?', installs), installs
    name = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["name"]
    assert name == "gpujobs"
    extras = re.findall(r"/opt/gpujobs\[([a-z,]+)\]", installs)
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for group in extras:
        for extra in group.split(","):
            assert extra in declared, f"{dockerfile} installs unknown extra {extra}"
