"""``gpujobs serve``: settings → app → uvicorn, bound where JupyterHub says (or --host/--port)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import uvicorn

from ..config import load_settings
from .app import create_app
from .localmode import LocalModeRefused, local_user


def serve(config_file: str | None = None, **overrides: Any) -> int:
    settings = load_settings(config_file, **overrides)
    if settings.single_machine:
        try:
            local_user(settings)  # refused at once, not after the start-up work
        except LocalModeRefused as exc:
            print(f"gpujobs: {exc}", file=sys.stderr)
            return 2
    # What the service writes (the database, logs, the audit log) is its own: jobs run as other
    # accounts and must not read it.
    os.umask(0o077)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # HTTP clients log every request at INFO: the hub lookups and the Kubernetes watches would drown
    # what matters.  Their warnings still show.
    for chatty in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
    host, port = settings.bind()
    # The store's writer and readers are threads; hand the GIL back to the event loop sooner than
    # the default 5 ms so that a busy thread does not add milliseconds to every request.
    sys.setswitchinterval(0.001)
    app = create_app(settings)
    # Access logs stay off: URLs are safe (tokens never travel in them) but they cost throughput.
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=settings.log_level,
        access_log=False,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=5,
    )
    return 0
