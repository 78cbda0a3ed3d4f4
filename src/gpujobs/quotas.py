"""Quotas and priorities from config, resolved per user.  Pure: no I/O.

The rule for a user is built field by field, most specific first: the user's own entry
(``quotas.users.<name>``) wins; else the user's groups (``quotas.groups.<group>``; when several of the
user's groups set a field, the most generous value wins); else ``quotas.default``; else no limit.

    quotas:
      default: {max_gpus: 2, max_running_jobs: 10, max_queued_jobs: 100, max_timeout_seconds: 86400,
                allowed_priorities: [low, normal, high]}
      groups:
        students: {max_gpus: 1, allowed_priorities: [low, normal], allowed_gpu_types: [t4, a100]}
      users:
        alice: {max_queued_jobs: 20}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .scheduler.policy import Quota


class QuotaRule(BaseModel):
    """Limits; a field left out means "not set here" (a less specific rule, or no limit, applies)."""

    model_config = ConfigDict(extra="forbid")

    max_gpus: int | None = Field(None, ge=0, description="GPUs held at once, all types together.")
    max_gpus_per_type: dict[str, int] | None = Field(
        None, description="GPUs held at once per type or family."
    )
    max_running_jobs: int | None = Field(None, ge=0)
    max_queued_jobs: int | None = Field(None, ge=0)
    max_timeout_seconds: int | None = Field(None, ge=1, description="Also the timeout of jobs that set none.")
    allowed_priorities: list[str] | None = None
    allowed_gpu_types: list[str] | None = None
    allowed_images: list[str] | None = None


class QuotasConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default: QuotaRule = Field(default_factory=QuotaRule)
    groups: dict[str, QuotaRule] = Field(default_factory=dict)
    users: dict[str, QuotaRule] = Field(default_factory=dict)


_LISTS = ("allowed_priorities", "allowed_gpu_types", "allowed_images")


def _more_generous(field: str, a: Any, b: Any) -> Any:
    if field in _LISTS:
        return sorted(set(a) | set(b))
    if field == "max_gpus_per_type":
        merged = dict(a)
        for key, value in b.items():
            merged[key] = max(merged.get(key, value), value)
        return merged
    return max(a, b)


def resolve(config: QuotasConfig, user: str, groups: Iterable[str]) -> QuotaRule:
    """The rule that applies to ``user`` in ``groups``: user > groups (most generous) > default."""
    values: dict[str, Any] = {}
    for field in QuotaRule.model_fields:
        chosen = getattr(config.default, field)
        from_groups = [
            getattr(config.groups[group], field) for group in sorted(set(groups)) if group in config.groups
        ]
        from_groups = [value for value in from_groups if value is not None]
        if from_groups:
            chosen = from_groups[0]
            for value in from_groups[1:]:
                chosen = _more_generous(field, chosen, value)
        own = config.users.get(user)
        if own is not None and getattr(own, field) is not None:
            chosen = getattr(own, field)
        values[field] = chosen
    return QuotaRule(**values)


def policy_quota(rule: QuotaRule, normalise: Any = None) -> Quota:
    """The concurrent limits the scheduling policy enforces."""
    allowed = (
        tuple(normalise(t) if normalise else t for t in rule.allowed_gpu_types)
        if rule.allowed_gpu_types
        else None
    )
    per_type = {normalise(k) if normalise else k: v for k, v in (rule.max_gpus_per_type or {}).items()}
    return Quota(
        max_gpus=rule.max_gpus,
        max_gpus_per_type=per_type,
        max_running_jobs=rule.max_running_jobs,
        allowed_gpu_types=allowed,
    )


def accounting_group(groups: Iterable[str], shares: Mapping[str, float]) -> str:
    """The group a job's usage is counted under for fair share: its first group with a configured share,
    else its first group, else ``default``."""
    ordered = sorted(set(groups))
    for group in ordered:
        if group in shares:
            return group
    return ordered[0] if ordered else "default"
