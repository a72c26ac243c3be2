"""Who may sign: signer ids, roles and the public-key size (docs/signing.md §1, §7).

Shared by the signature formats (:mod:`calyx.domain.signatures`) and the trust store
(:mod:`calyx.domain.trust`), and kept apart from both so that neither has to import the other for
them: the trust store lists signers, the signature code checks approvals against the trust store.
Pure, no dependencies inside calyx.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = [
    "PUBLIC_KEY_LEN",
    "ROLES",
    "SIGNER_ID_RE",
    "Role",
    "signer_id_error",
]

Role = Literal["human", "agent"]
ROLES: tuple[Role, ...] = ("human", "agent")

PUBLIC_KEY_LEN = 32

SIGNER_ID_RE = re.compile(r"[a-z0-9](?:[-a-z0-9.]{0,61}[a-z0-9])?", re.ASCII)
"""Signer ids become the name part of annotation keys (``cosign.calyx.io/<id>``), which Kubernetes
limits to 63 characters; we also require lowercase so that one signer cannot appear under two
spellings."""


def signer_id_error(signer_id: object) -> str | None:
    """Return why ``signer_id`` is not a valid signer id, or ``None`` if it is valid."""
    if not isinstance(signer_id, str):
        return f"signer id must be a string, got {type(signer_id).__name__}"
    if SIGNER_ID_RE.fullmatch(signer_id) is None:
        shown = repr(signer_id if len(signer_id) <= 64 else signer_id[:64] + "…")
        return (
            f"signer id {shown} is invalid (lowercase letters, digits, '-' and '.', "
            "starting and ending alphanumeric, at most 63 characters)"
        )
    return None
