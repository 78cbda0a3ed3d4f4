"""What the client says when the address it was given is not the gpujobs service."""

from __future__ import annotations

import httpx
import pytest

from gpujobs.client.client import _not_the_service


@pytest.mark.parametrize(
    ("url", "response", "advice"),
    [
        # The hub's root: it redirects to its login page.
        (
            "http://hub.example.org:8000/",
            httpx.Response(302, headers={"location": "/hub/login?next=%2Fhub%2F"}),
            "use http://hub.example.org:8000/services/gpujobs/",
        ),
        # A user's own server, under a base URL.
        (
            "https://lab.example.org/jupyter/user/alice/lab/",
            httpx.Response(200, text="<html>lab</html>"),
            "use https://lab.example.org/jupyter/services/gpujobs/",
        ),
        # The hub's API or pages under a base URL.
        (
            "https://lab.example.org/jupyter/hub/api/",
            httpx.Response(200, text="<html>hub</html>"),
            "use https://lab.example.org/jupyter/services/gpujobs/",
        ),
    ],
)
def test_a_hub_address_is_recognised_and_the_service_address_given(
    url: str, response: httpx.Response, advice: str
) -> None:
    message = _not_the_service(url, response)
    assert "JupyterHub itself" in message and message.endswith(advice)


@pytest.mark.parametrize("url", ["http://hub:8000/services/gpujobs/", "http://127.0.0.1:8765/"])
def test_a_service_address_that_answers_nonsense_is_not_called_a_hub(url: str) -> None:
    message = _not_the_service(url, httpx.Response(502, text="Bad Gateway"))  # a proxy, a service alone
    assert message == f"{url} answered 502 with no gpujobs answer (not JSON)"
