"""gpujobs: run Python scripts and notebook cells as GPU jobs from JupyterHub.

In a notebook::

    import gpujobs
    client = gpujobs.Client()            # finds the service and your token in the environment
    job = client.submit("train.py", gpus=1, gpu_type="a100")
    job.wait()                           # shows progress; returns the final status
    print(job.logs())

Server parts (the service, executors, store) live in submodules and need the ``[server]`` extra.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["ApiError", "Client", "Job", "__version__", "load_ipython_extension"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import gpujobs` (and the job runner) stay fast and need no optional packages.
    if name in ("Client", "Job", "ApiError"):
        from .client import client

        return getattr(client, name)
    raise AttributeError(name)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext gpujobs``: registers ``%%gpujob`` and ``%gpujobs``."""
    from .client.magic import register

    register(ipython)
