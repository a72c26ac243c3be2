"""Reading a Rollout YAML file for ``calyx rollout digest`` and ``calyx lease create --rollout``.

Both verbs exist so that signers can bind *how* a change is rolled out (docs/signing.md,
"Binding the rollout (rolloutRef)"): the digest is computed here from the file exactly as the
operator computes it from the stored object, so a file that the CLI cannot read the way the
operator would is refused with one line instead of producing a digest that never matches.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calyx.api.common import API_VERSION
from calyx.api.errors import InvalidSpecError
from calyx.api.rollout import RolloutSpec, parse_rollout_spec
from calyx.cli import yamlio
from calyx.cli.errors import CliError
from calyx.domain.canonical import CanonicalError
from calyx.domain.rollout_binding import rollout_spec_digest

STDIN = "-"


@dataclass(frozen=True)
class RolloutFile:
    """A parsed Rollout document: name, namespace (``None`` when the file leaves it to
    ``kubectl -n``), validated spec, and its binding digest."""

    name: str
    namespace: str | None
    spec: RolloutSpec
    digest: str


def read_rollout_file(path: str) -> RolloutFile:
    """Load exactly one ``rollouts.calyx.io`` document from ``path`` (``-`` for stdin).

    Raises :class:`CliError` with one line naming the file for: a missing file, invalid YAML,
    not exactly one document, another kind, no ``metadata.name``, an invalid spec, or a spec
    with no canonical form (a float in ``postDeploy.jobTemplate``).
    """
    where = "stdin" if path == STDIN else path
    try:
        text = sys.stdin.read() if path == STDIN else Path(path).read_text()
    except FileNotFoundError:
        raise CliError(f"{where}: no such file") from None
    except OSError as exc:
        raise CliError(f"{where}: cannot read: {exc.strerror or exc}") from None
    try:
        docs = yamlio.load_all(text)
    except Exception as exc:  # yaml.YAMLError and friends
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CliError(f"{where}: not valid YAML: {first}") from None
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise CliError(f"{where}: expected exactly one Rollout document, found {len(docs)}")
    doc: dict[str, Any] = docs[0]
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != "Rollout":
        raise CliError(
            f"{where}: not a rollouts.calyx.io object (apiVersion {doc.get('apiVersion')!r}, "
            f"kind {doc.get('kind')!r})"
        )
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise CliError(f"{where}: metadata.name is missing (the binding names the Rollout)")
    namespace = meta.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise CliError(f"{where}: metadata.namespace must be a string")
    try:
        spec = parse_rollout_spec(doc.get("spec"))
    except InvalidSpecError as exc:
        raise CliError(f"{where}: {exc}") from None
    try:
        digest = rollout_spec_digest(spec)
    except CanonicalError as exc:
        raise CliError(f"{where}: spec cannot be digested: {exc}") from None
    return RolloutFile(name=meta["name"], namespace=namespace or None, spec=spec, digest=digest)
