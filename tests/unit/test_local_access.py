"""What a service without a hub keeps for its one user (``localaccess``), and how the client uses it."""

from __future__ import annotations

import http.server
import stat
import threading
from pathlib import Path

import pytest

from gpujobs.client.client import ApiError, Client, LocalTokenAuth
from gpujobs.config import Settings
from gpujobs.errors import Forbidden
from gpujobs.executors.accounts import find_account
from gpujobs.localaccess import (
    ACCESS_FILE,
    ROOT_DATA_DIR,
    default_data_dir,
    keep_local_access,
    read_local_access,
)
from gpujobs.service.localmode import LocalModeRefused, local_user


def keep(folder: Path, user: str = "ada", url: str = "http://127.0.0.1:8765/"):
    return keep_local_access(folder, url=url, user=user, owner_uid=None)


def test_the_token_is_kept_across_starts_and_the_address_follows_the_service(tmp_path: Path) -> None:
    first = keep(tmp_path)
    again = keep(tmp_path, url="http://127.0.0.1:9000/")
    assert again.token == first.token and again.url == "http://127.0.0.1:9000/"
    assert len(first.token) == 64 and stat.S_IMODE((tmp_path / ACCESS_FILE).stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [ACCESS_FILE]  # no temporary file left behind


def test_another_user_or_a_damaged_file_gets_a_new_token(tmp_path: Path) -> None:
    first = keep(tmp_path)
    other = keep(tmp_path, user="bob")
    assert other.token != first.token and other.user == "bob"  # ada's token no longer works
    (tmp_path / ACCESS_FILE).write_text('{"url": "x", "user": "bob"}')  # no token
    assert keep(tmp_path, user="bob").token != other.token
    (tmp_path / ACCESS_FILE).write_text("not json")
    assert read_local_access({"GPUJOBS_DATA_DIR": str(tmp_path)}) is None


def test_the_data_dir_is_looked_for_where_the_service_keeps_it(tmp_path: Path) -> None:
    assert default_data_dir({"HOME": "/home/ada"}, euid=1000) == Path("/home/ada/.local/share/gpujobs")
    assert default_data_dir({"XDG_DATA_HOME": "/x"}, euid=1000) == Path("/x/gpujobs")
    assert default_data_dir({}, euid=0) == ROOT_DATA_DIR
    (tmp_path / "share" / "gpujobs").mkdir(parents=True)
    keep(tmp_path / "share" / "gpujobs")
    found = read_local_access({"XDG_DATA_HOME": str(tmp_path / "share")}, euid=1000)
    assert found is not None and found.user == "ada"


def test_the_client_uses_the_kept_token_only_for_the_kept_address(tmp_path: Path) -> None:
    access = keep(tmp_path, url="http://127.0.0.1:8765/")
    env = {"GPUJOBS_DATA_DIR": str(tmp_path), "HOME": str(tmp_path)}
    for given in ({}, {"GPUJOBS_URL": "http://127.0.0.1:8765"}):
        with Client(env={**env, **given}) as client:  # the token waits for the service's proof
            assert client.url == access.url and isinstance(client._http.auth, LocalTokenAuth)
            assert "Authorization" not in client._http.headers
    with pytest.raises(ApiError, match="no token"):  # never sent to another address
        Client(env={**env, "GPUJOBS_URL": "http://elsewhere:8000/services/gpujobs/"})
    with pytest.raises(ApiError, match="start `gpujobs serve`"):
        Client(env={"GPUJOBS_DATA_DIR": str(tmp_path / "none"), "HOME": str(tmp_path)})


def test_who_the_one_user_is() -> None:
    with pytest.raises(LocalModeRefused, match="--local-user NAME"):
        local_user(Settings(nvml=False), euid=0)  # root serves nobody by default: root never runs jobs
    with pytest.raises(LocalModeRefused, match="not a user name"):
        local_user(Settings(nvml=False, local_user="a b"), euid=1000)
    with pytest.raises(LocalModeRefused, match="root or a system account"):
        local_user(Settings(nvml=False, local_user="daemon"), euid=0)
    assert local_user(Settings(nvml=False, local_user="ada"), euid=1000) == ("ada", 1000)
    with pytest.raises(LocalModeRefused, match="has no name on this machine"):
        local_user(Settings(nvml=False), euid=54321)  # a container's --user with no account
    # With pods for jobs, any name will do, and the token file stays the service's.
    assert local_user(Settings(nvml=False, executor="kubernetes"), euid=0) == ("root", 0)


def test_an_ordinary_accounts_service_runs_its_one_users_jobs_as_itself_and_nobody_elses() -> None:
    solo = Settings(nvml=False, local_user="ada")
    assert find_account(solo, "ada", euid=1000) is None  # the service's own account
    with pytest.raises(Forbidden, match="unprivileged account"):
        find_account(solo, "bob", euid=1000)
    with pytest.raises(Forbidden, match="unprivileged account"):  # under a hub, no user is the service
        find_account(Settings(nvml=False, local_user="ada", hub_api_url="http://hub/api"), "ada", euid=1000)


class Squatter(http.server.BaseHTTPRequestHandler):
    """Another program on the service's port while the service is down: it notes what it is sent."""

    seen: list[str] = []

    def do_GET(self) -> None:
        Squatter.seen.append(self.headers.get("Authorization") or "")
        body = b'{"success": true, "data": {"proof": "0000"}, "message": "", "timestamp": ""}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def test_the_kept_token_goes_only_to_a_service_that_proves_it_holds_it(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Squatter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        access = keep(tmp_path, url=url)
        env = {"GPUJOBS_DATA_DIR": str(tmp_path), "HOME": str(tmp_path), "JUPYTERHUB_API_TOKEN": "hub-tok"}
        with (
            Client(env=env) as client,
            pytest.raises(ApiError, match="cannot prove it is the gpujobs service"),
        ):
            client.gpu_status()
        assert Squatter.seen and not any(access.token in seen or "hub-tok" in seen for seen in Squatter.seen)
    finally:
        server.shutdown()
        server.server_close()


def test_a_link_in_place_of_the_file_is_never_followed(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    elsewhere = keep(tmp_path / "other")
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / ACCESS_FILE).symlink_to(tmp_path / "other" / ACCESS_FILE)
    made = keep(folder)
    assert made.token != elsewhere.token  # not taken over from the file the link pointed at
    assert not (folder / ACCESS_FILE).is_symlink()  # replaced, and the other file left as it was
    assert read_local_access({"GPUJOBS_DATA_DIR": str(tmp_path / "other")}) == elsewhere
