"""The token cache of the hub authenticator, against a real (fake) hub over HTTP: entries expire, a
full cache drops the expired ones first and never grows past its bound, and a hub that answers
nonsense is a 503, not a 500."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest

from gpujobs.config import Settings
from gpujobs.errors import DependencyUnavailable
from gpujobs.service import auth
from gpujobs.testing.fakehub import FakeHub


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    started = FakeHub()
    yield started
    started.close()


def authenticator(hub_url: str, token: str | None = None, **settings: object) -> auth.HubAuthenticator:
    return auth.HubAuthenticator(
        Settings(hub_api_url=hub_url, hub_api_token=token, nvml=False, **settings),  # type: ignore[arg-type]
        httpx.AsyncClient(timeout=5),
    )


async def test_a_full_cache_drops_expired_entries_first_and_stays_bounded(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "_MAX_CACHED", 3)
    who = authenticator(hub.api_url, hub.service_token)
    tokens = {name: hub.add_user(name) for name in ("ann", "ben", "cat", "dan")}
    for name in ("ann", "ben", "cat"):
        assert (await who.user_for_token(tokens[name])).name == name
    assert len(who._cache) == 3
    # All fresh and the cache full: it starts again rather than grow.
    assert (await who.user_for_token(tokens["dan"])).name == "dan"
    assert len(who._cache) == 1
    # Expired entries are the first to go: with a zero lifetime, every one is expired at once.
    short = authenticator(hub.api_url, hub.service_token, auth_cache_seconds=0)
    for name in ("ann", "ben", "cat", "dan"):
        assert (await short.user_for_token(tokens[name])).name == name
        assert len(short._cache) <= 3
    await who.client.aclose()
    await short.client.aclose()


async def test_an_expired_entry_asks_the_hub_again(hub: FakeHub) -> None:
    who = authenticator(hub.api_url, hub.service_token, auth_cache_seconds=0)
    token = hub.add_user("ann")
    assert (await who.user_for_token(token)).name == "ann"
    hub.close()  # the hub is gone: an expired entry cannot vouch for the token any more
    with pytest.raises(DependencyUnavailable):
        await who.user_for_token(token)
    await who.client.aclose()


class _Nonsense(http.server.BaseHTTPRequestHandler):
    def log_message(self, *_args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = b"<html>a proxy's login page</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


async def test_a_hub_that_answers_nonsense_is_unavailable_not_an_error() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Nonsense)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        who = authenticator(f"http://127.0.0.1:{server.server_address[1]}/hub/api")
        with pytest.raises(DependencyUnavailable) as caught:
            await who.user_for_token("some-token")
        assert "JupyterHub" in caught.value.message
        await who.client.aclose()
    finally:
        server.shutdown()
