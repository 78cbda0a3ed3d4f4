"""IPython magics: ``%%gpujob`` runs a cell as a job; ``%gpujobs`` lists your jobs.

%load_ext gpujobs

%%gpujob --gpus 1 --gpu-type a100 --follow
import torch
print(torch.cuda.get_device_name(0))
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from .client import TERMINAL, ApiError, Client, Job, describe
from .tables import jobs_listing

_parser = argparse.ArgumentParser(prog="%%gpujob", add_help=False, exit_on_error=False)
_parser.add_argument("--gpus", type=int, default=None)
_parser.add_argument("--gpu-type", default=None)
_parser.add_argument("--name", default=None)
_parser.add_argument("--cpu", default=None)
_parser.add_argument("--memory", default=None)
_parser.add_argument("--priority", default=None)
_parser.add_argument("--timeout", type=int, default=None)
_parser.add_argument("--requirement", "-r", action="append", default=[])
_parser.add_argument("--follow", "-f", action="store_true", help="stream the logs until the job ends")


def parse_magic_line(line: str) -> argparse.Namespace:
    try:
        options, extra = _parser.parse_known_args(shlex.split(line))
    except (argparse.ArgumentError, ValueError) as exc:
        raise ApiError(0, f"%%gpujob: {exc}") from None
    if extra:
        raise ApiError(0, f"%%gpujob: unknown option(s) {' '.join(extra)}")
    return options


def run_cell(client: Client, line: str, cell: str, out: Any = None) -> Job:
    """Submit ``cell`` as inline source with the options in ``line``; follow it when asked."""
    out = out or sys.stdout
    options = parse_magic_line(line)
    job = client.submit(
        code=cell,
        name=options.name or "notebook-cell",
        gpus=options.gpus,
        gpu_type=options.gpu_type,
        cpu=options.cpu,
        memory=options.memory,
        priority=options.priority,
        timeout=options.timeout,
        requirements=options.requirement,
    )
    print(describe(job.view), file=out, flush=True)
    if options.follow:
        for text in job.logs(follow=True):
            out.write(text)
            out.flush()
        view = job.status()
        while view["status"] not in TERMINAL:  # the log stream ends with the job; its record may lag
            view = job.wait(show=False, poll=0.2)
        print(describe(view), file=out, flush=True)
    return job


def jobs_table(client: Client, limit: int = 20) -> str:
    return jobs_listing([job.view for job in client.jobs(limit=limit)])


def register(ipython: Any, client: Client | None = None) -> None:
    from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

    @magics_class
    class GpuJobMagics(Magics):
        _client: Client | None = client

        def _get_client(self) -> Client:
            if self._client is None:
                self._client = Client()
            return self._client

        @cell_magic("gpujob")  # type: ignore[arg-type]
        def gpujob(self, line: str, cell: str) -> None:
            """Run this cell as a GPU job: %%gpujob [--gpus N] [--gpu-type T] [--follow] ..."""
            try:
                job = run_cell(self._get_client(), line, cell)
            except ApiError as exc:
                print(f"gpujobs: {exc.message}", file=sys.stderr)
                return
            self.shell.user_ns["_gpujob"] = job  # type: ignore[union-attr]

        @line_magic("gpujobs")  # type: ignore[arg-type]
        def gpujobs(self, line: str) -> None:
            """List your recent jobs."""
            try:
                print(jobs_table(self._get_client()))
            except ApiError as exc:
                print(f"gpujobs: {exc.message}", file=sys.stderr)

    ipython.register_magics(GpuJobMagics)
