"""DNS-safe names (RFC 1123 labels) from user names and job ids, in one place.

A name that is already safe stays as it is; anything else is lowered, cleaned and given a short hash
of the original, so two different users never share a slug (``Alice`` and ``alice`` differ).

    >>> safe_slug("alice")
    'alice'
    >>> safe_slug("Alice@Example.org")
    'alice-example-org-cfd44c4f'
"""

from __future__ import annotations

import hashlib
import re

_SAFE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_UNSAFE_RUN = re.compile(r"[^a-z0-9]+")


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def safe_slug(name: str, max_length: int = 63) -> str:
    """``name`` as a DNS label: itself when already safe and short enough, else cleaned + hash."""
    if _SAFE.match(name) and len(name) <= max_length:
        return name
    cleaned = _UNSAFE_RUN.sub("-", name.lower()).strip("-") or "x"
    suffix = _hash(name)
    cleaned = cleaned[: max_length - len(suffix) - 1].rstrip("-")
    return f"{cleaned}-{suffix}" if cleaned else suffix


def job_name(job_id: str) -> str:
    """The Job's name: deterministic from the job id (so creating twice finds the first)."""
    return f"gpujob-{job_id}"


def script_configmap_name(job_id: str) -> str:
    return f"gpujob-{job_id}-script"


def label_value(text: str) -> str:
    """A label value (≤ 63 characters, alphanumeric at both ends)."""
    return safe_slug(text)


def namespace_for(template: str, username: str) -> str:
    """A user's namespace from a template such as ``gpujobs-{username}``: the user's slug, shortened
    (with its hash) so that the whole stays a DNS label."""
    room = 63 - len(template.replace("{username}", ""))
    return template.replace("{username}", safe_slug(username, room))
