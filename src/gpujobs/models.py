"""API models: what users send (``JobSpec``) and what they get back (``JobView``, ``GpuStatus``).

Checks that need no context live here (shapes, quantities, PEP 508, environment names); checks that
need the configuration or the inventory (paths, GPU types, images) live in ``admission.py``.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import Enum
from typing import Any, Generic, TypeVar

from packaging.requirements import InvalidRequirement, Requirement
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .quantities import QuantityError, parse_cpu, parse_memory

# A bound on input only: what this cluster can give is checked against its nodes at submit, and
# phrased against them ("gpu_count 99 is more than any node has: at most 2 t4 on one node").
MAX_GPU_COUNT = 1024
MAX_ARGS = 256
MAX_REQUIREMENTS = 64
MAX_ENV = 128
# Bounds far above any machine, so that numbers stay numbers (no overflow, no infinity) everywhere after.
MAX_CPU_CORES = 1_000_000
MAX_MEMORY_BYTES = 2**50


class JobStatus(str, Enum):
    QUEUED = "queued"
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Variables a job may not set: they would escape GPU pinning, load foreign code into the interpreter or
# a shell, steer how requirements are installed, or impersonate what gpujobs and JupyterHub set.
# (docs/operators/security.md lists them for users.)
RESERVED_ENV = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "CUDA_DEVICE_ORDER",
        # The interpreter: where it finds itself and its modules, and code it runs on its own.
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PYTHONINSPECT",
        "PYTHONBREAKPOINT",
        "PYTHONUSERBASE",
        "PYTHONNOUSERSITE",
        "PYTHONSAFEPATH",
        "PYTHONEXECUTABLE",
        "PYTHONPLATLIBDIR",
        "PYTHONPYCACHEPREFIX",
        # Shells' start-up files.
        "BASH_ENV",
        "ENV",
        "ZDOTDIR",
        # Where installers look for their configuration.
        "XDG_CONFIG_HOME",
        "XDG_CONFIG_DIRS",
    }
)
RESERVED_ENV_SUFFIXES = ("_VISIBLE_DEVICES",)
# The operator's settings decide where requirements come from: pip's, uv's, conda's and the dynamic
# loader's variables are refused whole.
RESERVED_ENV_PREFIXES = ("GPUJOBS_", "JUPYTERHUB_", "LD_", "PIP_", "UV_", "CONDA_", "VIRTUAL_ENV")


def env_name_problem(name: str) -> str | None:
    if not _ENV_NAME.match(name):
        return f"{name!r} is not a valid variable name (letters, digits and _, not starting with a digit)"
    upper = name.upper()
    if (
        upper in RESERVED_ENV
        or upper.endswith(RESERVED_ENV_SUFFIXES)
        or upper.startswith(RESERVED_ENV_PREFIXES)
    ):
        return f"{name!r} is reserved: gpujobs sets it (or it could escape GPU pinning)"
    return None


def requirement_problem(text: str) -> str | None:
    """Why ``text`` is not a plain PEP 508 requirement such as ``numpy>=1.26``; None when it is one."""
    stripped = text.strip()
    if not stripped:
        return "empty requirement"
    if stripped.startswith("-"):
        return f"{text!r} is a pip option, not a requirement; only PEP 508 names such as 'numpy>=1.26'"
    try:
        requirement = Requirement(stripped)
    except InvalidRequirement:
        return f"{text!r} is not a PEP 508 requirement (such as 'numpy>=1.26' or 'scipy==1.13.*')"
    if requirement.url:
        return f"{text!r} names a URL; only package names from the configured index are allowed"
    return None


class JobSpec(BaseModel):
    """A job as submitted to ``POST api/k8s/submit-job``.  Unknown fields are refused.

    Example::

        {"name": "cnn-training", "script_path": "/shared/examples/ml_training_example.py",
         "gpu_required": true, "gpu_type": "any", "cpu_limit": "4", "memory_limit": "8Gi"}
    """

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=False,
        # The "exactly one of script_path or script" rule, for clients that read the schema.
        json_schema_extra={
            "oneOf": [
                {"required": ["script_path"], "properties": {"script_path": {"type": "string"}}},
                {"required": ["script"], "properties": {"script": {"type": "string"}}},
            ]
        },
    )

    name: str = Field(
        "job", min_length=1, max_length=128, description="A name for people; need not be unique."
    )
    script_path: str | None = Field(
        None,
        max_length=4096,
        description="The script to run: relative to your home, or absolute inside your home or shared "
        "storage.",
    )
    script: str | None = Field(
        None, description="Inline Python source, run instead of a file (at most 1 MiB)."
    )
    args: list[str] = Field(
        default_factory=list, max_length=MAX_ARGS, description="Arguments after the script."
    )
    requirements: list[str] = Field(
        default_factory=list,
        max_length=MAX_REQUIREMENTS,
        description="PEP 508 requirements installed for this job only (e.g. 'numpy>=1.26').",
    )
    environment: dict[str, str] = Field(default_factory=dict, description="Extra environment variables.")
    working_dir: str | None = Field(None, max_length=4096, description="Defaults to your home.")
    gpu_required: bool | None = Field(None, description="Whether the job needs GPUs; implied by gpu_count.")
    gpu_count: int | None = Field(
        None, ge=0, le=MAX_GPU_COUNT, description="GPUs on one node; 1 when gpu_required."
    )
    gpu_type: str = Field(
        "any", max_length=64, description="'any', a family ('a100') or a sized type ('a100-80gb')."
    )
    cpu_limit: str | None = Field(None, description="CPU cores as a Kubernetes quantity: '4', '0.5', '500m'.")
    memory_limit: str | None = Field(None, description="Memory as a Kubernetes quantity: '8Gi', '512Mi'.")
    priority: str | None = Field(
        None,
        max_length=32,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="A priority name the admin configured (default: low, normal, high); 'normal' when unset.",
    )
    timeout_seconds: int | None = Field(None, ge=1, le=30 * 86400, description="Killed after this long.")
    retries: int = Field(0, ge=0, le=10, description="Runs again after a failure, this many times at most.")
    image: str | None = Field(
        None, max_length=256, description="Container image (Kubernetes); from the allowed list."
    )

    @field_validator("name")
    @classmethod
    def _printable_name(cls, value: str) -> str:
        if any(ord(ch) < 32 for ch in value):
            raise ValueError("name must not contain control characters")
        return value

    @field_validator("args")
    @classmethod
    def _args_without_nul(cls, value: list[str]) -> list[str]:
        for arg in value:
            if "\x00" in arg or len(arg) > 8192:
                raise ValueError("each argument must be at most 8192 characters, without NUL bytes")
        return value

    @field_validator("requirements")
    @classmethod
    def _pep508(cls, value: list[str]) -> list[str]:
        for item in value:
            problem = requirement_problem(item)
            if problem:
                raise ValueError(problem)
        return [item.strip() for item in value]

    @field_validator("environment")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_ENV:
            raise ValueError(f"at most {MAX_ENV} variables")
        for name, text in value.items():
            problem = env_name_problem(name)
            if problem:
                raise ValueError(problem)
            if "\x00" in text or len(text) > 32768:
                raise ValueError(f"value of {name!r} must be at most 32768 characters, without NUL bytes")
        return value

    @field_validator("cpu_limit", "memory_limit", mode="before")
    @classmethod
    def _numbers_as_quantities(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float):
            return format(value, "g")
        return value

    @field_validator("cpu_limit")
    @classmethod
    def _cpu_quantity(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            cores = parse_cpu(value)
        except QuantityError:
            raise ValueError(
                f"{value!r} is not a CPU quantity; use cores ('4', '0.5') or millicores ('500m')"
            ) from None
        if cores <= 0:
            raise ValueError("cpu_limit must be more than 0")
        if cores > MAX_CPU_CORES:
            raise ValueError(f"cpu_limit must be at most {MAX_CPU_CORES} cores")
        return value.strip()

    @field_validator("memory_limit")
    @classmethod
    def _memory_quantity(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            size = parse_memory(value)
        except QuantityError:
            raise ValueError(f"{value!r} is not a memory quantity; use e.g. '8Gi', '512Mi' or '2G'") from None
        if size < 4 * 2**20:
            raise ValueError("memory_limit must be at least 4Mi")
        if size > MAX_MEMORY_BYTES:
            raise ValueError("memory_limit must be at most 1Pi")
        return value.strip()

    @field_validator("gpu_type")
    @classmethod
    def _gpu_type_shape(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$", value.strip() or "any"):
            raise ValueError(f"{value!r} is not a GPU type; use 'any' or a type such as 'a100' or 't4'")
        return value.strip() or "any"

    @model_validator(mode="after")
    def _one_script_and_gpu_consistency(self) -> JobSpec:
        if (self.script_path is None) == (self.script is None):
            raise ValueError("give exactly one of script_path (a file) or script (inline source)")
        if self.script is not None and "\x00" in self.script:
            raise ValueError("script must not contain NUL bytes")
        if self.gpu_required is False and self.gpu_count:
            raise ValueError("gpu_count is more than 0 but gpu_required is false")
        if self.gpu_required and self.gpu_count == 0:
            raise ValueError("gpu_required is true but gpu_count is 0")
        return self

    @property
    def gpus_wanted(self) -> int:
        if self.gpu_count is not None:
            return self.gpu_count
        return 1 if self.gpu_required else 0


class JobView(BaseModel):
    """A job as users see it."""

    job_id: str
    name: str
    user: str
    status: JobStatus
    reason: str | None = Field(
        None, description="Why it ended or waits: NonZeroExit, OOMKilled, Timeout, ..."
    )
    message: str | None = Field(
        None, description="For people: what a waiting job waits for, or how it ended."
    )
    queue_position: int | None = Field(
        None, description="1 for the next job to be admitted; null unless queued."
    )
    gpu_required: bool
    gpu_count: int
    gpu_type: str
    priority: str
    cpu_limit: str | None = None
    memory_limit: str | None = None
    timeout_seconds: int | None = None
    retries: int = 0
    attempts: int = 0
    image: str | None = None
    script_path: str | None = None
    created_at: datetime
    admitted_at: datetime | None = Field(
        None, description="When the scheduler gave it its GPUs (its code starts a moment later)."
    )
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    node: str | None = None
    gpus: list[str] = Field(default_factory=list, description="Device indices on the node.")


class GpuDevice(BaseModel):
    index: str
    uuid: str | None = None
    gpu_type: str
    product: str
    memory_mib: int | None = None
    utilization_percent: int | None = None
    simulated: bool = False
    job_id: str | None = Field(None, description="The job holding it, if any.")


class GpuNodeView(BaseModel):
    name: str
    gpu_type: str | None
    total: int
    available: int
    used: int
    ready: bool = True
    schedulable: bool = True
    taints: list[str] = Field(default_factory=list)
    devices: list[GpuDevice] = Field(default_factory=list)


class GpuTypeSummary(BaseModel):
    gpu_type: str
    total: int
    available: int
    used: int
    queued_demand: int = Field(0, description="GPUs wanted by jobs waiting in the queue.")


class GpuStatus(BaseModel):
    total_gpus: int
    available_gpus: int
    used_gpus: int
    gpu_types: list[GpuTypeSummary]
    gpu_nodes: list[GpuNodeView]
    last_updated: datetime
    source: str = Field(description="local, simulated, kubernetes, or a mix such as 'local+simulated'.")
    stale: bool = Field(
        False,
        description="True while gpujobs is out of touch with the cluster: these figures may be out of date, "
        "and no job is admitted until it is in touch again.",
    )
    synced_at: datetime | None = Field(
        None,
        description="When this view was last known to match the cluster (null where it always does: the "
        "local executor).",
    )
    next_cursor: str | None = Field(
        None,
        description="With ?limit=, the node list is one page: pass this as ?cursor= for the next; null on "
        "the last page (and without a limit).",
    )


class JobList(BaseModel):
    jobs: list[JobView]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page; null on the last.")


class JobLogs(BaseModel):
    job_id: str
    status: JobStatus
    logs: str
    truncated: bool = Field(
        False, description="The answer was cut at the size limit: only the newest part of the log is here."
    )


T = TypeVar("T")


class FieldError(BaseModel):
    field: str | None = Field(description="The part of the request at fault (e.g. 'gpu_count'), if one.")
    message: str


class ErrorDetail(BaseModel):
    """``data`` of an error answer: which field is at fault; for an invalid request, every problem."""

    field: str | None = None
    errors: list[FieldError] | None = None


class Envelope(BaseModel, Generic[T]):
    """Every JSON answer: ``{"success", "data", "message", "timestamp"}``."""

    success: bool
    data: T | None = None
    message: str
    timestamp: datetime
