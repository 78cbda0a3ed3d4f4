# JupyterHub on Kubernetes with KubeSpawner (without the Zero to JupyterHub chart), with gpujobs.
# The gpujobs service runs as its own Deployment (deploy/kubernetes/); its token comes from a Secret.

import os

from gpujobs.hub import gpujobs_roles, gpujobs_service, server_token_scopes

c = get_config()  # noqa: F821 - provided by JupyterHub

c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
c.KubeSpawner.image = "ghcr.io/gpujobs/singleuser:0.1.0"
c.KubeSpawner.namespace = os.environ.get("POD_NAMESPACE", "jhub")
c.KubeSpawner.storage_pvc_ensure = True
c.KubeSpawner.pvc_name_template = "claim-{username}"
c.KubeSpawner.volumes = [{"name": "home", "persistentVolumeClaim": {"claimName": "claim-{username}"}}]
c.KubeSpawner.volume_mounts = [{"name": "home", "mountPath": "/home/jovyan"}]
c.KubeSpawner.environment = {"GPUJOBS_URL": "http://proxy-public/services/gpujobs/"}
c.KubeSpawner.lifecycle_hooks = {"postStart": {"exec": {"command": ["python", "-m", "gpujobs.hub", "/home/jovyan"]}}}
c.KubeSpawner.server_token_scopes = server_token_scopes("gpujobs")

# GPU notebook servers, for interactive work; batch GPU work goes through gpujobs.
_gpu_toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
c.KubeSpawner.profile_list = [
    {"display_name": "CPU server (submit GPU jobs with gpujobs)", "default": True},
    {
        "display_name": "Interactive T4 GPU",
        "kubespawner_override": {
            "extra_resource_limits": {"nvidia.com/gpu": "1"},
            "node_selector": {"nvidia.com/gpu.product": "Tesla-T4"},
            "tolerations": [_gpu_toleration],
        },
    },
    {
        "display_name": "Interactive A100 80GB GPU",
        "kubespawner_override": {
            "extra_resource_limits": {"nvidia.com/gpu": "1"},
            "node_selector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
            "tolerations": [_gpu_toleration],
        },
    },
]

service = gpujobs_service(url="http://gpujobs.gpujobs.svc.cluster.local:8765", command=[])
service["api_token"] = os.environ.get("GPUJOBS_HUB_TOKEN", "")
c.JupyterHub.services = [service]
c.JupyterHub.load_roles = gpujobs_roles("gpujobs")
