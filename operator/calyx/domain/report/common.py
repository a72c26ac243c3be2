"""What the report's parts share: its ConfigMap keys, the audit tail's default bounds, and the
tolerant readers for what is read as stored (spec, Lease and condition fields may be missing
or malformed; the Rollout's status is read through its typed model).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "AUDIT_KEY",
    "JSON_KEY",
    "MAX_AUDIT_BYTES",
    "MAX_AUDIT_RECORDS",
    "MD_KEY",
    "SCHEMA",
    "as_list",
    "as_map",
    "clip",
]

SCHEMA: Final = "calyx.io/report/v1"
JSON_KEY: Final = "report.json"
MD_KEY: Final = "report.md"
AUDIT_KEY: Final = "audit.jsonl"

MAX_AUDIT_RECORDS: Final = 1000
MAX_AUDIT_BYTES: Final = 384 * 1024


def as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def clip(text: str, limit: int = 1024) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
