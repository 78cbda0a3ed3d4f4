from datetime import datetime, timedelta, timezone
from pathlib import Path

from gpujobs.config import load_settings
from gpujobs.quotas import QuotaRule, QuotasConfig, accounting_group, policy_quota, resolve
from gpujobs.scheduler.usage import UsageTracker

ISSUE_YAML = """
quotas:
  default: {max_gpus: 2, max_running_jobs: 10, max_queued_jobs: 100, max_timeout_seconds: 86400,
            allowed_priorities: [low, normal, high]}
  groups:
    students: {max_gpus: 1, allowed_priorities: [low, normal], allowed_gpu_types: [t4, a100]}
  users:
    alice: {max_queued_jobs: 20}
"""


def test_the_documented_shape_loads_and_the_most_specific_rule_wins(tmp_path: Path) -> None:
    config_file = tmp_path / "gpujobs.yaml"
    config_file.write_text(ISSUE_YAML)
    quotas = load_settings(config_file).quotas
    alice = resolve(quotas, "alice", ["students"])
    assert alice.max_queued_jobs == 20  # her own entry
    assert alice.max_gpus == 1 and alice.allowed_priorities == ["low", "normal"]  # her group
    assert alice.max_running_jobs == 10 and alice.max_timeout_seconds == 86400  # the default
    bob = resolve(quotas, "bob", [])
    assert bob.max_gpus == 2 and bob.max_queued_jobs == 100 and bob.allowed_gpu_types is None


def test_several_groups_give_the_most_generous_value() -> None:
    quotas = QuotasConfig(
        groups={
            "a": QuotaRule(max_gpus=1, allowed_gpu_types=["t4"], max_gpus_per_type={"a100": 1}),
            "b": QuotaRule(max_gpus=4, allowed_gpu_types=["a100"], max_gpus_per_type={"a100": 2}),
        }
    )
    rule = resolve(quotas, "carol", ["a", "b"])
    assert rule.max_gpus == 4
    assert rule.allowed_gpu_types == ["a100", "t4"]
    assert rule.max_gpus_per_type == {"a100": 2}


def test_policy_quota_normalises_types() -> None:
    quota = policy_quota(
        QuotaRule(allowed_gpu_types=["Tesla-T4"], max_gpus_per_type={"NVIDIA-A100": 1}),
        lambda t: t.lower().replace("tesla-", "").replace("nvidia-", ""),
    )
    assert quota.allowed_gpu_types == ("t4",) and quota.max_gpus_per_type == {"a100": 1}


def test_accounting_group_prefers_groups_with_a_share() -> None:
    assert accounting_group(["alpha", "staff"], {"staff": 2}) == "staff"
    assert accounting_group(["beta", "alpha"], {}) == "alpha"
    assert accounting_group([], {}) == "default"


def test_usage_decays_with_its_half_life() -> None:
    tracker = UsageTracker(half_life_seconds=3600)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    tracker.add("alice", "g", 1000.0, start)
    users, groups = tracker.snapshot((start + timedelta(hours=2)).timestamp())
    assert round(users["alice"]) == 250 and round(groups["g"]) == 250
    tracker.add("alice", "g", 1000.0, start - timedelta(hours=1))  # an older record, loaded later
    users, _ = tracker.snapshot(start.timestamp())
    assert round(users["alice"]) == 1500
