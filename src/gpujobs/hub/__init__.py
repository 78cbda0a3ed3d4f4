"""What JupyterHub needs from gpujobs: the service registration, roles, user-server scopes and
environment, and the pre-spawn hook that deploys the init notebook and examples.

``jupyterhub_config.py`` beside this file is a complete, readable configuration for one machine that
uses these helpers; ``deploy/`` holds the Kubernetes (Zero to JupyterHub), KubeSpawner and
DockerSpawner variants.
"""

from .integration import (
    INIT_NOTEBOOK,
    deploy_user_files,
    gpujobs_roles,
    gpujobs_service,
    make_pre_spawn_hook,
    server_token_scopes,
)

__all__ = [
    "INIT_NOTEBOOK",
    "deploy_user_files",
    "gpujobs_roles",
    "gpujobs_service",
    "make_pre_spawn_hook",
    "server_token_scopes",
]
