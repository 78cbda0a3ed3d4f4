"""The Kubernetes executor (in progress): pure parts first.

- ``slugs``: DNS-safe names from user names and job ids.
- ``nodes``: GPU inventory from Node objects and the pods bound to them (labels, allocatable, taints).
- ``manifests``: batch/v1 Jobs and script ConfigMaps built from a job, as plain dicts.
"""
