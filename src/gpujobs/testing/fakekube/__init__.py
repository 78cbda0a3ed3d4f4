"""A simulated Kubernetes cluster that speaks real HTTP and really runs the pods' commands.

For tests, benchmarks and people who want to try gpujobs' Kubernetes mode without a cluster:

- ``store``: objects with resourceVersions, and the event log that watches replay (410 Gone when a
  watch asks for history that was compacted);
- ``api``: the subset of the Kubernetes REST API gpujobs uses (nodes, pods, jobs, configmaps,
  namespaces, events, pod logs; list, watch, create, get, patch, delete);
- ``controllers``: a scheduler that honours nodeSelector, tolerations and allocatable GPUs/CPU/memory,
  a Job controller (backoffLimit, activeDeadlineSeconds, podFailurePolicy, TTL, cascading delete),
  and a kubelet that runs each container's command as a local process (the image is ignored);
- ``nodes``: realistic GPU nodes from a spec like ``a100-80gb:8x2,t4:1x4,cpu:0x1``;
- ``server``: ``FakeCluster``, whose API server can be stopped and started again on the same port, or
  restarted empty (as after an etcd wipe), and whose ``faults`` make requests fail (a status, a
  connection reset before or after the request was done, a hang) and watches drop or go silent.

Run it with ``gpujobs fake-cluster --nodes SPEC --port P --kubeconfig FILE``.
"""
