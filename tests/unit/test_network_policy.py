"""What deploy/kubernetes/networkpolicy.yaml lets a job pod reach, evaluated the way Kubernetes does
(policies that select a pod add up; ipBlock with except; ports): DNS and public HTTPS yes; the
Kubernetes API, the hub, the gpujobs service, the metadata address and anything inbound, no."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpujobs.executors.kubernetes.manifests import JobTemplate, labels_for
from gpujobs.store.repository import new_job_values, record_of

REPO = Path(__file__).resolve().parents[2]
POLICIES = [d for d in yaml.safe_load_all((REPO / "deploy/kubernetes/networkpolicy.yaml").read_text()) if d]


def _job_pod_labels() -> dict[str, str]:
    values = new_job_values(
        job_id="0123456789abcdef", user="alice", groups=[], name="t", priority="normal", gpu_required=False,
        gpu_count=0, gpu_type="any", cpu_request=0.0, spec={},
    )  # fmt: skip
    return labels_for(record_of(1, values), JobTemplate(namespace="gpujobs"))


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _peer_allows(peer: dict[str, Any], address: str, namespace: dict[str, str], pod: dict[str, str]) -> bool:
    if "ipBlock" in peer:
        ip = ipaddress.ip_address(address)
        block = peer["ipBlock"]
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(excluded) for excluded in block.get("except", [])
        )
    if "namespaceSelector" in peer and not _selects(peer["namespaceSelector"], namespace):
        return False
    return "podSelector" not in peer or _selects(peer["podSelector"], pod)


def egress_allowed(address: str, port: int, protocol: str = "TCP", *, namespace=None, pod=None) -> bool:
    labels = _job_pod_labels()
    for policy in POLICIES:
        spec = policy["spec"]
        if "Egress" not in spec["policyTypes"] or not _selects(spec["podSelector"], labels):
            continue
        for rule in spec.get("egress", []):
            ports_ok = any(
                p["port"] == port and p["protocol"] == protocol for p in rule.get("ports", [])
            ) or ("ports" not in rule)
            peers = rule.get("to", [])
            if ports_ok and any(_peer_allows(p, address, namespace or {}, pod or {}) for p in peers):
                return True
    return False


def test_every_policy_selects_the_job_pods_and_nothing_inbound_is_allowed() -> None:
    labels = _job_pod_labels()
    assert POLICIES and all(_selects(p["spec"]["podSelector"], labels) for p in POLICIES)
    ingress = [p for p in POLICIES if "Ingress" in p["spec"]["policyTypes"]]
    assert ingress and all(p["spec"].get("ingress", []) == [] for p in ingress)


def test_dns_is_reachable() -> None:
    kube_dns = {"namespace": {"kubernetes.io/metadata.name": "kube-system"}, "pod": {"k8s-app": "kube-dns"}}
    assert egress_allowed("10.96.0.10", 53, "UDP", **kube_dns)
    assert egress_allowed("10.96.0.10", 53, "TCP", **kube_dns)


@pytest.mark.parametrize(
    ("what", "address", "port"),
    [
        ("the cloud metadata address", "169.254.169.254", 80),
        ("the Kubernetes API's service address", "10.96.0.1", 443),
        ("the Kubernetes API on a node", "192.168.1.10", 6443),
        ("the hub's proxy", "10.0.12.7", 443),
        ("the gpujobs service", "172.20.3.4", 8765),
        ("a pod range in carrier-grade NAT space", "100.64.3.2", 443),
        ("a public address on another port", "151.101.0.223", 22),
    ],
)
def test_what_a_job_must_not_reach(what: str, address: str, port: int) -> None:
    assert not egress_allowed(address, port), what


def test_a_public_package_index_is_reachable() -> None:
    assert egress_allowed("151.101.0.223", 443)  # pypi.org's CDN
