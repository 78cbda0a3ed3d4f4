"""Stand-ins for what our machines lack, used by tests, benchmarks and demos: a fake JupyterHub API
(``fakehub``) and, later, a simulated Kubernetes cluster.  Never imported by the service itself."""
