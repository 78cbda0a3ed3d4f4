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


# --- the names KubeSpawner gives a user's objects ----------------------------------------------------------
# A job mounts the home PVC the user's notebook server has, so ``{username}`` in the claim template
# must expand exactly as KubeSpawner expands it: its "safe" scheme (KubeSpawner 7 and later) or the
# legacy "escape" scheme, whichever the hub's deployment uses.

_KUBESPAWNER_HASH = 8
_KUBESPAWNER_FIELD = 48  # the longest one template field may become
_NOT_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")
_OBJECT_NAME = re.compile(r"^[a-z][-a-z0-9]*[a-z0-9]$|^[a-z]$")


def _safe_part(name: str, max_length: int) -> str:
    """Lowercase letters, digits and single hyphens; starts with a letter; never empty."""
    part = _NOT_ALPHANUMERIC.sub("-", name.lower()).lstrip("-")[:max_length].rstrip("-")
    if part and not part[0].isalpha():
        part = "x-" + part[: max_length - 2]
    return part or "x"


def kubespawner_slug(name: str, scheme: str = "safe") -> str:
    """``{username}`` as KubeSpawner expands it in object names such as ``claim-{username}``.

    "safe": the name itself when it is a valid object name (a letter first, no ``--``, 48 characters at
    most); otherwise a cleaned prefix, ``---`` and 8 hex digits of its SHA-256 (48 at most).
    "escape": every character but lowercase letters and digits as ``-`` and its UTF-8 bytes in hex.
    """
    if scheme == "escape":
        safe = set("abcdefghijklmnopqrstuvwxyz0123456789")
        return "".join(
            char if char in safe else "".join(f"-{byte:02x}" for byte in char.encode()) for char in name
        ).lower()
    if "--" not in name and len(name) <= _KUBESPAWNER_FIELD and _OBJECT_NAME.match(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_KUBESPAWNER_HASH]
    return f"{_safe_part(name, _KUBESPAWNER_FIELD - _KUBESPAWNER_HASH - 3)}---{digest}"
