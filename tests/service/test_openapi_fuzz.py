"""A bounded property-based fuzz of the whole published API (schemathesis), with a valid admin
token: no input may cause a server error, and every answer must match the OpenAPI document (status
codes, content types, bodies, headers, ``Allow`` on 405)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
        "unsupported_method",
    ]
)
EXAMPLES_PER_OPERATION = 40


def test_no_input_makes_a_server_error_or_an_answer_off_the_schema(world) -> None:
    cli = shutil.which("schemathesis", path=os.path.dirname(sys.executable))
    if cli is None:
        pytest.skip("schemathesis is not installed (it comes with gpujobs[dev])")
    # Jobs the fuzzer submits are stored but never run: random code is not run as anyone here.
    service = world.start("--simulate-gpus", "a100:2,t4:1", env={"GPUJOBS_ADMISSION_PAUSED": "true"})
    token = world.hub.add_user("fuzzer", admin=True)
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "fuzz_hooks",
        "PYTHONPATH": str(Path(__file__).parent),
    }
    run = subprocess.run(
        [
            cli, "run", f"{service.url}openapi.json",
            "--url", service.url.rstrip("/"),
            "-H", f"Authorization: token {token}",
            "--checks", CHECKS,
            "--max-examples", str(EXAMPLES_PER_OPERATION),
            "--seed", "20261130",
            "--request-timeout", "30",
            "--workers", "1",
            # Under a hub (as here) it is always a 404: tested in single-machine mode instead.
            "--exclude-path", "/api/local/proof",
            "--no-color",
        ],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout
