"""Settings, read once: command-line options > ``GPUJOBS_*`` environment > YAML file > defaults.

The variables JupyterHub gives a managed service (``JUPYTERHUB_API_URL``, ``JUPYTERHUB_API_TOKEN``,
``JUPYTERHUB_SERVICE_NAME``, ``JUPYTERHUB_SERVICE_PREFIX``, ``JUPYTERHUB_SERVICE_URL``) are read here too,
and nowhere else.  Nothing below this module reads ``os.environ``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from .errors import InvalidSpec
from .localaccess import default_data_dir
from .quotas import QuotasConfig


class PoolConfig(BaseModel):
    """A node pool the cluster autoscaler can grow (Kubernetes executor only)."""

    model_config = ConfigDict(extra="forbid")

    gpu_type: str
    gpus_per_node: int = Field(gt=0)
    max_nodes: int = Field(gt=0)


def _default_data_dir() -> Path:
    return default_data_dir(os.environ)


StrList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Every option of the service; each is also ``GPUJOBS_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="GPUJOBS_", extra="forbid", populate_by_name=True)

    executor: Literal["local", "kubernetes"] = "local"
    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = Field(None, description="SQLAlchemy URL; SQLite in data_dir by default.")
    host: str = "127.0.0.1"
    port: int = 8765
    simulate_gpus: str = Field("", description="Simulated devices, e.g. 'a100-80gb:2,t4:1'.")
    nvml: bool = Field(True, description="Discover real GPUs with NVML.")
    local_cpu_cores: float | None = Field(
        None, gt=0, description="CPU cores the local executor offers jobs; all of this machine's by default."
    )

    home_template: str = Field(
        "/home/{username}", description="Each user's home; relative paths resolve here."
    )
    shared_roots: StrList = Field(default_factory=list, description="Shared storage roots, e.g. /shared.")
    admin_users: StrList = Field(default_factory=list)
    admin_groups: StrList = Field(default_factory=list)

    job_python: str | None = Field(None, description="Interpreter for jobs; this one by default.")
    job_account_template: str = Field(
        "{username}", description="The system account a user's jobs run as, e.g. 'jupyter-{username}'."
    )
    job_account_fallback: str | None = Field(
        None, description="An unprivileged account for users without one; unset: their jobs are refused."
    )
    job_account_min_uid: int = Field(
        1000, ge=1, description="Accounts below this uid (system accounts) never run jobs."
    )
    jobs_as_service_account: bool = Field(
        False,
        description="Run jobs of users without an account as the service's own account (a single-user "
        "machine, tests); when the service is root, that is root.",
    )
    job_cgroups: bool = Field(
        True, description="Give each local job its own cgroup (memory limit, kill) where the machine allows."
    )
    pip_extra_args: StrList = Field(
        default_factory=list, description="Operator's pip options, e.g. an index."
    )
    kill_grace_seconds: float = 5.0
    launch_retry_seconds: float = Field(
        300.0,
        ge=0,
        description="How long a launch that meets passing trouble (the cluster does not answer, 5xx, 429) "
        "is tried again, with backoff, before the job fails as LaunchFailed.",
    )
    max_inline_script_bytes: int = 1024 * 1024
    allowed_images: StrList = Field(default_factory=lambda: ["gpujobs-runtime:cpu", "gpujobs-runtime:gpu"])
    gpu_type_aliases: dict[str, str] = Field(default_factory=dict)

    # Scheduling (see quotas.py and scheduler/policy.py).
    priorities: dict[str, int] = Field(
        default_factory=lambda: {"low": 0, "normal": 1, "high": 2},
        description="Priority names and their levels; a higher level goes first.",
    )
    default_priority: str = "normal"
    aging_interval_seconds: float = Field(
        3600.0, gt=0, description="A waiting job gains one level this often."
    )
    fair_share_half_life_seconds: float = Field(7 * 86400.0, gt=0, description="How fast past usage fades.")
    group_shares: dict[str, float] = Field(default_factory=dict, description="Fair-share weight per group.")
    pools: list[PoolConfig] = Field(default_factory=list, description="GPU node pools the cluster can add.")
    quotas: QuotasConfig = Field(default_factory=QuotasConfig)
    gpu_hour_costs: dict[str, float] = Field(
        default_factory=dict, description="Cost of one GPU-hour per type or family ('default' for the rest)."
    )

    # Kubernetes executor.
    kubeconfig: str | None = Field(None, description="Kubeconfig file; in-cluster config when unset.")
    kube_namespace: str = Field("gpujobs", description="Namespace where job pods run.")
    kube_namespace_template: str | None = Field(
        None,
        description="Per-user namespaces, e.g. 'gpujobs-{username}' (the user's DNS-safe slug); "
        "overrides kube_namespace.",
    )
    kube_create_namespaces: bool = Field(
        False, description="Create a user's namespace (Pod Security restricted) when it is missing."
    )
    kube_image_cpu: str = "gpujobs-runtime:cpu"
    kube_image_gpu: str = "gpujobs-runtime:gpu"
    kube_run_as_user: int = 1000
    kube_home_claim_template: str | None = Field(
        "claim-{username}", description="Users' home PVC (Zero to JupyterHub's naming); empty for none."
    )
    kube_user_slug_scheme: Literal["safe", "escape"] = Field(
        "safe",
        description="How {username} expands in kube_home_claim_template: as KubeSpawner's slug_scheme "
        "('safe', KubeSpawner 7+; 'escape', the legacy scheme).",
    )
    kube_shared_claim: str | None = Field(None, description="A PVC mounted at /shared in every job.")
    kube_request_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="How long one call to the API server may take (a watch or a log being "
        "followed waits for as long as it lasts).",
    )
    kube_watch_timeout_seconds: int = Field(
        30,
        ge=1,
        le=3600,
        description="Each watch asks the API server to end it after this long (then it "
        "is reopened); a server sends a bookmark shortly before, so a quiet cluster is still heard from.",
    )
    kube_silence_seconds: float = Field(
        65.0,
        gt=0,
        description="A watch that hears nothing (no event, no bookmark) for this long is listed again; "
        "meanwhile the cluster view counts as stale: gpu-status says so and nothing is admitted onto it.",
    )
    kube_container_creating_seconds: float = Field(
        600.0,
        gt=0,
        description="A job whose pod is still being created (volumes, image) after this long fails with "
        "the cluster's last warning about it.",
    )

    api_docs: bool = Field(True, description="Serve the interactive API docs at /docs (from local files).")
    cors_origins: StrList = Field(
        default_factory=list, description="Origins other sites' pages may call the API from; none by default."
    )
    audit_log_max_bytes: int = Field(
        10 * 1024 * 1024,
        gt=0,
        description="Size at which audit.log is rotated.",
    )
    audit_log_keep: int = Field(5, ge=1, description="Rotated audit logs kept.")

    auth_cache_seconds: float = 60.0
    admission_paused: bool = Field(False, description="Accept jobs but admit none (maintenance, benchmarks).")
    schedule_interval_seconds: float = 2.0
    log_level: str = "info"

    local_user: str | None = Field(
        None,
        description="Without a hub (no hub_api_url): the one user, whose token the service keeps in the "
        "data dir; the service's own account by default.  Required when the service runs as root.",
    )
    hub_api_url: str | None = Field(None, validation_alias=AliasChoices("JUPYTERHUB_API_URL", "hub_api_url"))
    hub_api_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("JUPYTERHUB_API_TOKEN", "hub_api_token")
    )
    service_name: str = Field(
        "gpujobs", validation_alias=AliasChoices("JUPYTERHUB_SERVICE_NAME", "service_name")
    )
    service_prefix: str = Field(
        "/", validation_alias=AliasChoices("JUPYTERHUB_SERVICE_PREFIX", "service_prefix")
    )
    service_url: str | None = Field(
        None, validation_alias=AliasChoices("JUPYTERHUB_SERVICE_URL", "service_url")
    )
    # The dashboard's login through the hub (OAuth), as JupyterHub tells a service it manages.
    oauth_client_id: str | None = Field(
        None,
        validation_alias=AliasChoices("JUPYTERHUB_CLIENT_ID", "oauth_client_id"),
        description="The hub's OAuth client of this service (default: service-<service_name>).",
    )
    oauth_callback_url: str | None = Field(
        None,
        validation_alias=AliasChoices("JUPYTERHUB_OAUTH_CALLBACK_URL", "oauth_callback_url"),
        description="Where the hub sends a browser back after login (default: <prefix>oauth_callback).",
    )
    hub_host: str = Field(
        "",
        validation_alias=AliasChoices("JUPYTERHUB_HOST", "hub_host"),
        description="The hub's public origin when it differs from the service's ('' when the same).",
    )
    hub_base_url: str = Field(
        "/",
        validation_alias=AliasChoices("JUPYTERHUB_BASE_URL", "hub_base_url"),
        description="The hub's base URL.",
    )

    @field_validator(
        "shared_roots",
        "admin_users",
        "admin_groups",
        "pip_extra_args",
        "allowed_images",
        "cors_origins",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _default_priority_is_known(self) -> Settings:
        if self.default_priority not in self.priorities:
            raise ValueError(f"default_priority {self.default_priority!r} is not one of the priorities")
        return self

    @model_validator(mode="after")
    def _silence_outlasts_a_watch(self) -> Settings:
        # A quiet cluster is heard from once per watch (the bookmark before it ends): a shorter silence
        # window would list everything again all the time.
        if self.kube_silence_seconds <= self.kube_watch_timeout_seconds:
            raise ValueError(
                f"kube_silence_seconds ({self.kube_silence_seconds:g}) must be longer than "
                f"kube_watch_timeout_seconds ({self.kube_watch_timeout_seconds})"
            )
        return self

    @field_validator("kube_namespace", "kube_namespace_template")
    @classmethod
    def _namespace_shape(cls, value: str | None, info: Any) -> str | None:
        if value is None or (value == "" and info.field_name == "kube_namespace_template"):
            return value or None
        if info.field_name == "kube_namespace_template" and "{username}" not in value:
            raise ValueError("must contain {username}, e.g. gpujobs-{username}")
        fixed = value.replace("{username}", "u")
        # A template leaves the user's slug at least 22 characters (a readable prefix and its hash).
        longest = 41 if "{username}" in value else 63
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", fixed) or len(fixed) > longest:
            raise ValueError(
                f"{value!r} is not a namespace name: lowercase letters, digits and '-' "
                f"(at most {longest} characters)"
            )
        return value

    @field_validator("job_account_template")
    @classmethod
    def _names_the_user(cls, value: str) -> str:
        if "{username}" not in value or value.replace("{username}", "").count("{"):
            raise ValueError("must contain {username} and no other placeholder, e.g. jupyter-{username}")
        return value

    @field_validator("service_prefix")
    @classmethod
    def _slashes(cls, value: str) -> str:
        return "/" + value.strip("/") + "/" if value.strip("/") else "/"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)

    # --- derived values -----------------------------------------------------------------------

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'gpujobs.sqlite'}"

    @property
    def single_machine(self) -> bool:
        """No hub: one local user with a token from the data dir (``localaccess``)."""
        return not self.hub_api_url

    @property
    def client_id(self) -> str:
        return self.oauth_client_id or f"service-{self.service_name}"

    @property
    def callback_url(self) -> str:
        return self.oauth_callback_url or self.service_prefix.rstrip("/") + "/oauth_callback"

    @property
    def authorize_url(self) -> str:
        """Where a browser logs in to the hub and is asked (once) to let this service know who it is."""
        return f"{self.hub_host}{self.hub_base_url.rstrip('/')}/hub/api/oauth2/authorize"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    def bind(self) -> tuple[str, int]:
        """Where to listen: JUPYTERHUB_SERVICE_URL when the hub manages us, else host and port."""
        if self.service_url:
            parts = urlsplit(self.service_url)
            return parts.hostname or self.host, parts.port or (443 if parts.scheme == "https" else 80)
        return self.host, self.port

    def home_of(self, username: str) -> Path:
        return Path(self.home_template.format(username=username))


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The YAML file's options; keys may use '-' or '_'."""
    try:
        with open(path, encoding="utf-8") as handle:
            content = yaml.safe_load(handle) or {}
    except OSError as exc:
        raise InvalidSpec(f"cannot read config file {os.fspath(path)!r}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise InvalidSpec(f"config file {os.fspath(path)!r} is not valid YAML: {exc}") from exc
    if not isinstance(content, dict):
        raise InvalidSpec(f"config file {os.fspath(path)!r} must hold a mapping of options")
    return {str(key).replace("-", "_"): value for key, value in content.items()}


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Settings from the file (``--config`` or ``GPUJOBS_CONFIG``), the environment and ``overrides``.

    Overrides whose value is None are ignored, so CLI options that were not given do not mask the
    environment or the file.
    """
    config_file = config_file or os.environ.get("GPUJOBS_CONFIG")
    from_file = read_config_file(config_file) if config_file else {}
    given = {key: value for key, value in overrides.items() if value is not None}
    env_names = {name for name in os.environ if name.startswith("GPUJOBS_")}
    # The file sits below the environment: drop file keys that the environment sets.
    for key in list(from_file):
        if f"GPUJOBS_{key.upper()}" in env_names:
            del from_file[key]
    return Settings(**{**from_file, **given})
