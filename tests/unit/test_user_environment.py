"""The users' environment is versioned behind a link: a rebuild never pulls the environment out from
under servers and jobs that run from it.  (The build itself, pip and all, runs in the end-to-end tests;
here it is replaced by one that makes an empty environment, to test the swap.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from gpujobs.hub import userenv


@pytest.fixture
def fake_build(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    built: list[Path] = []

    def build(version: Path, _python: str, _wanted: list[str]) -> None:
        (version / "bin").mkdir(parents=True)
        (version / "bin" / "python").write_text("")
        built.append(version)

    monkeypatch.setattr(userenv, "_build", build)
    return built


def test_a_rebuild_makes_a_new_version_and_keeps_the_one_before(
    tmp_path: Path, fake_build: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    link = tmp_path / "user"
    (tmp_path / "user-unversioned-by-hand").mkdir()  # not ours: never touched
    first = userenv.ensure_user_environment(link, say=lambda _: None)
    assert link.is_symlink() and link.resolve() == first.parents[1]
    assert userenv.ensure_user_environment(link, say=lambda _: None) == first  # nothing changed: no build
    assert len(fake_build) == 1

    for generation in ("second", "third"):
        monkeypatch.setattr(userenv, "_source_digest", lambda generation=generation: generation)
        latest = userenv.ensure_user_environment(link, say=lambda _: None)
        assert link.resolve() == latest.parents[1]
    versions = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("user-") and p.is_dir())
    # The newest and the one before it stay (servers may run from it); the first is gone.
    assert len(versions) == 3 and "user-unversioned-by-hand" in versions
    assert not first.exists() and fake_build[-2].exists() and fake_build[-1].exists()


def test_an_environment_made_before_versions_is_kept_aside(tmp_path: Path, fake_build: list[Path]) -> None:
    link = tmp_path / "user"
    (link / "bin").mkdir(parents=True)  # the old layout: a real folder where the link goes
    interpreter = userenv.ensure_user_environment(link, say=lambda _: None)
    assert link.is_symlink() and interpreter.exists()
    assert (tmp_path / "user-unversioned" / "bin").is_dir()
