# JupyterHub with DockerSpawner (the brief's container spawner), with gpujobs on the same machine.
# Each user gets a container from the gpujobs single-user image; their home is a named volume that the
# gpujobs service also sees (mounted at the same path on the host side), and jobs run on the host's GPUs.

import os
from pathlib import Path

from gpujobs.hub import gpujobs_roles, gpujobs_service, make_pre_spawn_hook, server_token_scopes

c = get_config()  # noqa: F821 - provided by JupyterHub

data_dir = Path(os.environ.get("GPUJOBS_HUB_DATA_DIR", "/srv/gpujobs"))
homes = data_dir / "home"
hub_ip = os.environ.get("GPUJOBS_HUB_CONTAINER_IP", "172.17.0.1")  # the docker bridge, seen from containers

c.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
c.DockerSpawner.image = "ghcr.io/gpujobs/singleuser:0.1.0"
c.DockerSpawner.remove = True
c.DockerSpawner.notebook_dir = "/home/jovyan"
# Homes live on the host (bind mounts), so the hub's pre-spawn hook and the gpujobs service see them.
c.DockerSpawner.volumes = {str(homes / "{username}"): "/home/jovyan", "/shared": "/shared"}
c.JupyterHub.hub_ip = "0.0.0.0"
c.JupyterHub.hub_connect_ip = hub_ip
c.Spawner.server_token_scopes = server_token_scopes("gpujobs")
c.Spawner.pre_spawn_hook = make_pre_spawn_hook(
    service_url=f"http://{hub_ip}:8000/services/gpujobs/", home_of=lambda name: homes / name
)

c.JupyterHub.services = [
    gpujobs_service(
        url="http://127.0.0.1:8765",
        environment={
            "GPUJOBS_DATA_DIR": str(data_dir / "gpujobs"),
            "GPUJOBS_HOME_TEMPLATE": str(homes / "{username}"),
            "GPUJOBS_SHARED_ROOTS": "/shared",
        },
    )
]
c.JupyterHub.load_roles = gpujobs_roles("gpujobs")
