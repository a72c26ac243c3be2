"""The trust store: who may cosign, in which namespaces, under which policy (docs/signing.md §7).

It is parsed from the two keys of ConfigMap ``calyx-trust`` (``signers.yaml``, ``policy.yaml``).
Parsing is deliberately unforgiving: a typo in a trust store must stop the operator from trusting
anything with a clear message, never quietly widen or narrow who is trusted. So unknown fields,
duplicate ids or keys, globs that can never match and YAML duplicate keys are all errors that name
the file, the entry index and the signer id.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from fnmatch import fnmatchcase
from typing import Any, Final, Literal, get_args

import yaml

from calyx.domain.signers import PUBLIC_KEY_LEN, ROLES, Role, signer_id_error

__all__ = [
    "ROLLOUT_BINDINGS",
    "Policy",
    "RolloutBinding",
    "Signer",
    "TrustStore",
    "TrustStoreError",
    "dump_signers_yaml",
    "parse_trust_store",
]

SIGNERS_FILE = "signers.yaml"
POLICY_FILE = "policy.yaml"

_GLOB_CHARS = re.compile(r"[a-z0-9\-*?\[\]!]+", re.ASCII)
_BRACKET = re.compile(r"\[!?[^\[\]!]+\]", re.ASCII)


class TrustStoreError(ValueError):
    """The trust store ConfigMap is malformed; the message names file, entry and id."""


@dataclass(frozen=True)
class Signer:
    """A trusted key. ``namespaces`` are globs (``fnmatch``); ``None`` means every namespace."""

    id: str
    role: Role
    public_key: bytes
    namespaces: tuple[str, ...] | None = None

    def allows(self, namespace: str) -> bool:
        """Whether this signer's cosignatures count in ``namespace`` (case-sensitive globs)."""
        if self.namespaces is None:
            return True
        return any(fnmatchcase(namespace, pattern) for pattern in self.namespaces)


RolloutBinding = Literal["postDeploy", "always"]
"""When a Lease must bind its Rollout with ``spec.rolloutRef`` (docs/signing.md, trust store):

* ``postDeploy`` -- only when the Rollout has ``postDeploy``: its Job runs a pod of the Rollout
  author's choosing with the operator's rights, which the keys must approve;
* ``always`` -- every Rollout, so the signers also fix tiers, analysis and ``onBreach``.
"""

ROLLOUT_BINDINGS: Final[tuple[RolloutBinding, ...]] = get_args(RolloutBinding)


@dataclass(frozen=True)
class Policy:
    """Counting, time and binding rules; field names are the snake_case of ``policy.yaml``'s
    keys."""

    humans: int = 1
    agents: int = 1
    max_signature_age_seconds: int = 3600
    max_lease_seconds: int = 86400
    clock_skew_seconds: int = 60
    require_rollout_binding: RolloutBinding = "postDeploy"


@dataclass(frozen=True)
class TrustStore:
    """Signers by id plus the policy; what every verification is judged against."""

    signers: Mapping[str, Signer]
    policy: Policy


@dataclass(frozen=True)
class _IntField:
    """An integer ``policy.yaml`` key with a lower bound (booleans are not integers here)."""

    attr: str
    minimum: int


@dataclass(frozen=True)
class _EnumField:
    """A ``policy.yaml`` key whose value is one of a fixed set of strings, matched exactly:
    ``PostDeploy`` or ``"always "`` is an error, not a silent fallback to the default."""

    attr: str
    choices: tuple[str, ...]


# policy.yaml key -> how to parse it, in the order error messages list them
_POLICY_FIELDS: dict[str, _IntField | _EnumField] = {
    "humans": _IntField("humans", 1),
    "agents": _IntField("agents", 1),
    "maxSignatureAgeSeconds": _IntField("max_signature_age_seconds", 1),
    "maxLeaseSeconds": _IntField("max_lease_seconds", 1),
    "clockSkewSeconds": _IntField("clock_skew_seconds", 0),
    "requireRolloutBinding": _EnumField("require_rollout_binding", ROLLOUT_BINDINGS),
}
assert {f.attr for f in _POLICY_FIELDS.values()} == {f.name for f in fields(Policy)}

_SIGNER_FIELDS = ("id", "role", "publicKey", "namespaces")


def parse_trust_store(signers_yaml: str | None, policy_yaml: str | None) -> TrustStore:
    """Parse the ``calyx-trust`` ConfigMap's two keys; raise :class:`TrustStoreError`.

    A missing or empty ``signers.yaml`` is an empty store (every Lease is then rejected with
    "unknown signer", which is the safe reading); a missing ``policy.yaml`` means the defaults.
    """
    return TrustStore(signers=_parse_signers(signers_yaml), policy=_parse_policy(policy_yaml))


def dump_signers_yaml(signers: Iterable[Signer]) -> str:
    """Render ``signers`` as ``signers.yaml``, one flow mapping per line, in the given order.

    Used by ``calyx trust add/remove``; the output round-trips through :func:`parse_trust_store`.
    """
    lines = []
    for s in signers:
        entry: dict[str, object] = {
            "id": s.id,
            "role": s.role,
            "publicKey": base64.b64encode(s.public_key).decode("ascii"),
        }
        if s.namespaces is not None:
            entry["namespaces"] = list(s.namespaces)
        text = yaml.safe_dump(
            entry, default_flow_style=True, sort_keys=False, width=1_000_000
        ).strip()
        lines.append(f"- {text}\n")
    return "".join(lines) if lines else "[]\n"


# --------------------------------------------------------------------------- signers.yaml


def _parse_signers(text: str | None) -> dict[str, Signer]:
    doc = _load_yaml(text, SIGNERS_FILE)
    if doc is None:
        return {}
    if not isinstance(doc, list):
        raise TrustStoreError(f"{SIGNERS_FILE}: must be a YAML list of signers, got {_kind(doc)}")
    signers: dict[str, Signer] = {}
    by_key: dict[bytes, str] = {}
    for index, entry in enumerate(doc):
        signer = _parse_signer(index, entry)
        where = f"{SIGNERS_FILE}[{index}] (id {signer.id!r})"
        if signer.id in signers:
            raise TrustStoreError(f"{where}: duplicate id")
        if signer.public_key in by_key:
            raise TrustStoreError(
                f"{where}: duplicate publicKey, already used by {by_key[signer.public_key]!r} "
                "(one key must never count as two signers)"
            )
        signers[signer.id] = signer
        by_key[signer.public_key] = signer.id
    return signers


def _parse_signer(index: int, entry: object) -> Signer:
    where = f"{SIGNERS_FILE}[{index}]"
    if not isinstance(entry, dict):
        raise TrustStoreError(
            f"{where}: must be a mapping with id, role, publicKey, got {_kind(entry)}"
        )
    raw_id = entry.get("id")
    if raw_id is None:
        raise TrustStoreError(f"{where}: missing field 'id'")
    err = signer_id_error(raw_id)
    if err is not None:
        raise TrustStoreError(f"{where}: {err}")
    signer_id: str = raw_id
    where = f"{where} (id {signer_id!r})"

    unknown = sorted(str(k) for k in entry if k not in _SIGNER_FIELDS)
    if unknown:
        raise TrustStoreError(
            f"{where}: unknown field {', '.join(repr(k) for k in unknown)} "
            f"(allowed: {', '.join(_SIGNER_FIELDS)})"
        )
    for required in ("role", "publicKey"):
        if required not in entry:
            raise TrustStoreError(f"{where}: missing field {required!r}")

    role = entry["role"]
    if role not in ROLES:
        raise TrustStoreError(f"{where}: unknown role {role!r} (must be 'human' or 'agent')")

    public_key = _parse_public_key(where, entry["publicKey"])
    namespaces = _parse_namespaces(where, entry.get("namespaces"))
    return Signer(id=signer_id, role=role, public_key=public_key, namespaces=namespaces)


def _parse_public_key(where: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise TrustStoreError(f"{where}: publicKey must be a base64 string, got {_kind(value)}")
    try:
        raw = base64.b64decode(value.strip().encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise TrustStoreError(f"{where}: publicKey is not valid base64") from None
    if len(raw) != PUBLIC_KEY_LEN:
        raise TrustStoreError(
            f"{where}: publicKey is {len(raw)} bytes, an Ed25519 public key is {PUBLIC_KEY_LEN} "
            "(did you paste the private seed or a PEM file?)"
        )
    return raw


def _parse_namespaces(where: str, value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise TrustStoreError(f"{where}: namespaces must be a list of globs, got {_kind(value)}")
    if not value:
        raise TrustStoreError(f"{where}: namespaces is empty (omit it to allow every namespace)")
    for i, glob in enumerate(value):
        reason = _glob_error(glob)
        if reason is not None:
            raise TrustStoreError(f"{where}: namespaces[{i}] {reason}")
    return tuple(value)


def _glob_error(glob: object) -> str | None:
    """Why ``glob`` is not a usable namespace glob. ``fnmatch`` treats an unbalanced ``[`` as a
    literal, and namespaces are lowercase DNS labels, so such patterns would silently match
    nothing: we refuse them instead."""
    if not isinstance(glob, str):
        return f"must be a string, got {_kind(glob)}"
    if not glob:
        return "is an empty string"
    if _GLOB_CHARS.fullmatch(glob) is None:
        return (
            f"{glob!r} is not a namespace glob (lowercase letters, digits, '-', "
            "'*', '?', '[...]' only)"
        )
    if "[" in _BRACKET.sub("", glob) or "]" in _BRACKET.sub("", glob):
        return f"{glob!r} has an unbalanced or empty '[...]'"
    if "!" in _BRACKET.sub("", glob):
        return f"{glob!r}: '!' is only allowed right after '['"
    return None


# --------------------------------------------------------------------------- policy.yaml


def _parse_policy(text: str | None) -> Policy:
    doc = _load_yaml(text, POLICY_FILE)
    if doc is None:
        return Policy()
    if not isinstance(doc, dict):
        raise TrustStoreError(f"{POLICY_FILE}: must be a YAML mapping, got {_kind(doc)}")
    unknown = sorted(str(k) for k in doc if k not in _POLICY_FIELDS)
    if unknown:
        raise TrustStoreError(
            f"{POLICY_FILE}: unknown field {', '.join(repr(k) for k in unknown)} "
            f"(allowed: {', '.join(_POLICY_FIELDS)})"
        )
    values: dict[str, Any] = {}
    for key, spec in _POLICY_FIELDS.items():
        if key in doc:
            values[spec.attr] = _policy_value(key, spec, doc[key])
    return Policy(**values)


def _policy_value(key: str, spec: _IntField | _EnumField, v: object) -> object:
    """``v`` checked against ``spec``; raises :class:`TrustStoreError` naming key and value."""
    if isinstance(spec, _EnumField):
        if not isinstance(v, str):
            raise TrustStoreError(
                f"{POLICY_FILE}: {key} must be one of {_choices(spec.choices)}, got {_kind(v)}"
            )
        if v not in spec.choices:
            raise TrustStoreError(
                f"{POLICY_FILE}: {key} must be one of {_choices(spec.choices)}, got {v!r}"
            )
        return v
    if isinstance(v, bool) or not isinstance(v, int):
        raise TrustStoreError(f"{POLICY_FILE}: {key} must be an integer, got {_kind(v)}")
    if v < spec.minimum:
        raise TrustStoreError(f"{POLICY_FILE}: {key} must be >= {spec.minimum}, got {v}")
    return v


def _choices(choices: tuple[str, ...]) -> str:
    return ", ".join(repr(c) for c in choices)


# --------------------------------------------------------------------------- YAML


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one, which
    would let a second ``role:`` line override the first unnoticed)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:
            duplicate = False
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        with contextlib.suppress(TypeError):  # unhashable keys are refused by PyYAML itself
            seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _load_yaml(text: str | None, filename: str) -> object:
    if text is None or not text.strip():
        return None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        # PyYAML's str() spans lines and quotes the source; an SRE needs "what, where" on one line.
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(str(exc.problem or exc.context or "syntax error").split())
        raise TrustStoreError(f"{filename}: invalid YAML: {what}{where}") from None
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise TrustStoreError(f"{filename}: invalid YAML: {detail}") from None


def _kind(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, dict):
        return "mapping"
    if isinstance(v, list):
        return "list"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    return type(v).__name__
