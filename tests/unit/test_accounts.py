"""Which account a job runs as: the pure naming rule, and the order of the rules (never root)."""

from __future__ import annotations

import os
import pwd
import tempfile
from pathlib import Path

import pytest

from gpujobs.config import Settings
from gpujobs.errors import Forbidden
from gpujobs.executors.accounts import find_account, system_account_name, unreachable_folder


@pytest.mark.parametrize(
    ("username", "expected"),
    [("alice", "jupyter-alice"), ("bob_2", "jupyter-bob_2"), ("a-b", "jupyter-a-b")],
)
def test_plain_names_map_as_they_are(username: str, expected: str) -> None:
    assert system_account_name("jupyter-{username}", username) == expected


@pytest.mark.parametrize("username", ["Alice", "alice@lab.example", "x" * 40, "ünï", "1st", "a b"])
def test_other_names_become_valid_distinct_accounts(username: str) -> None:
    name = system_account_name("jupyter-{username}", username)
    assert len(name) <= 32 and name.startswith("jupyter-")
    assert all(ch.islower() or ch.isdigit() or ch in "-_" for ch in name)
    assert name != system_account_name("jupyter-{username}", username.swapcase() + "!")  # no sharing


def test_names_that_differ_only_in_case_get_different_accounts() -> None:
    assert system_account_name("{username}", "alice") != system_account_name("{username}", "Alice")


def test_a_name_shaped_like_another_users_digested_account_does_not_get_it() -> None:
    digested = system_account_name("jupyter-{username}", "alice@lab.org")
    impostor = digested.removeprefix("jupyter-")  # a valid plain name, chosen to collide
    assert system_account_name("jupyter-{username}", impostor) != digested


def settings(**options: object) -> Settings:
    return Settings(data_dir=Path("/nonexistent"), **options)  # type: ignore[arg-type]


def test_an_unprivileged_service_runs_jobs_as_itself_only_when_told_to() -> None:
    with pytest.raises(Forbidden, match="jobs_as_service_account"):
        find_account(settings(), "alice", euid=1000)
    assert find_account(settings(jobs_as_service_account=True), "alice", euid=1000) is None


def test_as_root_the_users_account_then_the_fallback_then_a_refusal() -> None:
    nobody = pwd.getpwnam("nobody")
    found = find_account(settings(job_account_template="nob{username}"), "ody", euid=0)
    assert found is not None and found.uid == nobody.pw_uid
    fallback = find_account(settings(job_account_fallback="nobody"), "no-such-user-here", euid=0)
    assert fallback is not None and fallback.uid == nobody.pw_uid
    with pytest.raises(Forbidden, match="no system account 'no-such-user-here'"):
        find_account(settings(), "no-such-user-here", euid=0)


def test_system_accounts_never_run_jobs() -> None:
    # A hub user named "daemon" (or www-data, backup, ...) must not get that account's files.
    with pytest.raises(Forbidden, match="system account"):
        find_account(settings(), "daemon", euid=0)
    with pytest.raises(Forbidden, match="system account"):
        find_account(settings(job_account_fallback="daemon"), "no-such-user-here", euid=0)
    assert find_account(settings(job_account_min_uid=1), "daemon", euid=0) is not None  # if you insist


def test_root_is_never_a_jobs_account() -> None:
    with pytest.raises(Forbidden, match="never runs jobs as root"):
        find_account(settings(), "root", euid=0)  # the user named root
    with pytest.raises(Forbidden, match="never runs jobs as root"):
        find_account(settings(job_account_fallback="root"), "no-such-user-here", euid=0)
    # jobs_as_service_account applies only to users without an account: root's account is refused.
    with pytest.raises(Forbidden, match="never runs jobs as root"):
        find_account(settings(jobs_as_service_account=True), "root", euid=0)


def test_a_template_must_name_the_user() -> None:
    with pytest.raises(ValueError, match="username"):
        settings(job_account_template="everyone")


def test_a_private_folder_on_the_way_is_found() -> None:
    with tempfile.TemporaryDirectory(dir="/var/tmp") as top:  # /var/tmp: every account passes through
        os.chmod(top, 0o755)  # noqa: S103
        private = Path(top) / "private"
        (private / "inner").mkdir(parents=True)
        (private / "inner").chmod(0o755)  # whatever the umask
        private.chmod(0o700)
        assert unreachable_folder(private / "inner") == private
        private.chmod(0o711)
        assert unreachable_folder(private / "inner") is None
