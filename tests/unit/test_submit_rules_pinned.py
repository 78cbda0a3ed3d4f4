"""Rules of a submission pinned at their boundaries: each test fails if the rule is inverted or its
limit moved by one (per-user priorities and GPU types, the timeout limit, the per-node GPU maximum, the
GPU quota, the defaults the check fills in, and the spec's own validators)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from builders import inventory, node, spec
from gpujobs.admission import check_spec
from gpujobs.config import Settings
from gpujobs.errors import Forbidden, GpujobsError, InvalidSpec
from gpujobs.models import JobSpec
from gpujobs.quotas import QuotaRule

# Two nodes: four a100s on one, two t4s on the other.
CLUSTER = inventory(node("big", *["a100-80gb"] * 4, cpu=32), node("small", "t4", "t4", cpu=8))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "home" / "alice").mkdir(parents=True)
    return Settings(
        home_template=str(tmp_path / "home" / "{username}"),
        data_dir=tmp_path / "data",
        priorities={"low": 0, "normal": 1, "high": 2},
    )


def checked(settings: Settings, rule: QuotaRule | None = None, **fields) -> JobSpec:
    return check_spec(spec(**fields), settings=settings, username="alice", inventory=CLUSTER, rule=rule)


def refusal(settings: Settings, rule: QuotaRule | None = None, **fields) -> GpujobsError:
    with pytest.raises(GpujobsError) as caught:
        checked(settings, rule, **fields)
    return caught.value


def test_only_the_users_allowed_priorities_are_taken(settings: Settings) -> None:
    rule = QuotaRule(allowed_priorities=["low", "normal"])
    assert checked(settings, rule, priority="normal").priority == "normal"
    assert checked(settings, rule, priority="low").priority == "low"
    refused = refusal(settings, rule, priority="high")
    assert isinstance(refused, Forbidden) and refused.field == "priority"
    assert "your priorities: low, normal" in refused.message
    assert checked(settings, QuotaRule(), priority="high").priority == "high"  # no list: all of them


def test_only_the_users_allowed_gpu_types_are_taken(settings: Settings) -> None:
    rule = QuotaRule(allowed_gpu_types=["t4"])
    assert checked(settings, rule, gpu_count=1, gpu_type="t4").gpu_type == "t4"
    refused = refusal(settings, rule, gpu_count=1, gpu_type="a100")
    assert isinstance(refused, InvalidSpec) and refused.field == "gpu_type"
    assert "not allowed for you; allowed types: t4" in refused.message
    assert checked(settings, QuotaRule(), gpu_count=1, gpu_type="a100").gpu_type == "a100"


def test_the_timeout_limit_takes_the_limit_itself_and_refuses_one_more(settings: Settings) -> None:
    rule = QuotaRule(max_timeout_seconds=600)
    assert checked(settings, rule, timeout_seconds=600).timeout_seconds == 600
    refused = refusal(settings, rule, timeout_seconds=601)
    assert refused.field == "timeout_seconds" and "over your limit of 600 s" in refused.message


def test_a_job_may_ask_for_as_many_gpus_as_the_largest_node_has_and_no_more(settings: Settings) -> None:
    assert checked(settings, gpu_count=4, gpu_type="a100").gpu_count == 4
    refused = refusal(settings, gpu_count=5, gpu_type="a100")
    assert refused.field == "gpu_count" and isinstance(refused, InvalidSpec)
    assert checked(settings, gpu_count=2, gpu_type="t4").gpu_count == 2
    assert refusal(settings, gpu_count=3, gpu_type="t4").field == "gpu_count"


def test_the_gpu_quota_takes_the_quota_itself_and_refuses_one_more(settings: Settings) -> None:
    rule = QuotaRule(max_gpus=2)
    assert checked(settings, rule, gpu_count=2, gpu_type="a100").gpu_count == 2
    refused = refusal(settings, rule, gpu_count=3, gpu_type="a100")
    assert "more than your quota of 2 GPUs" in refused.message
    per_type = QuotaRule(max_gpus_per_type={"a100": 1})
    assert checked(settings, per_type, gpu_count=1, gpu_type="a100").gpu_count == 1
    assert "quota of 1 a100 GPUs" in refusal(settings, per_type, gpu_count=2, gpu_type="a100").message
    assert checked(settings, per_type, gpu_count=2, gpu_type="t4").gpu_count == 2  # another type


def test_the_check_returns_the_spec_as_it_will_be_stored(settings: Settings) -> None:
    stored = checked(settings, QuotaRule(max_timeout_seconds=900), gpu_required=True, gpu_type="T4")
    assert stored.priority == "normal"  # the default priority filled in
    assert stored.timeout_seconds == 900  # no timeout given: the user's limit
    assert (stored.gpu_count, stored.gpu_required, stored.gpu_type) == (1, True, "t4")  # one, normalised
    plain = checked(settings)
    assert (plain.gpu_count, plain.gpu_required, plain.timeout_seconds) == (0, False, None)
    assert checked(settings, gpu_count=2, gpu_type="any").gpu_type == "any"


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"memory_limit": "3Mi"}, "memory_limit", "at least 4Mi"),
        ({"cpu_limit": "0"}, "cpu_limit", "more than 0"),
        ({"retries": -1}, "retries", "greater than or equal to 0"),
        ({"retries": 11}, "retries", "less than or equal to 10"),
        ({"environment": {"SEED": "4\x002"}}, "environment", "without NUL bytes"),
    ],
    ids=["memory-below-4Mi", "cpu-zero", "retries-negative", "retries-over-10", "nul-in-env"],
)
def test_the_specs_validators_refuse_just_past_their_limits(fields: dict, field: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        spec(**fields)
    errors = caught.value.errors()
    assert errors[0]["loc"][0] == field and words in str(caught.value)


def test_the_specs_validators_take_their_limits_themselves() -> None:
    accepted = spec(
        memory_limit="4Mi", cpu_limit="1m", retries=10, environment={"SEED": "42", "MODEL_DIR": "/data/m"}
    )
    assert (accepted.memory_limit, accepted.cpu_limit, accepted.retries) == ("4Mi", "1m", 10)
    assert accepted.environment == {"SEED": "42", "MODEL_DIR": "/data/m"}
    assert spec(retries=0).retries == 0
