"""``calyx rollout digest`` and ``calyx lease create --rollout`` (docs/cli.md), offline, and the
GitOps flow of docs/signing.md "Binding the rollout (rolloutRef)": both files committed, the Lease
pre-signed by two keys, and the operator's checks agreeing with the CLI."""

from __future__ import annotations

import base64
import datetime as dt
import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from calyx.api import parse_lease_spec, parse_rollout_spec
from calyx.cli import main as cli
from calyx.domain.rollout_binding import binding_problem, rollout_spec_digest
from calyx.domain.trust import Policy, Signer, TrustStore
from calyx.domain.verification import verify_lease

NS = "shop"
ROLLOUT = """\
apiVersion: calyx.io/v1alpha1
kind: Rollout
metadata:
  name: checkout-2-3-1
  namespace: shop
spec:
  leaseRef: {name: checkout-2-3-1}
  tiers:
    - {weight: 5, soakSeconds: 120}
    - {weight: 100}
  analysis:
    errorRate: {maxPermille: 10}
  postDeploy:
    jobTemplate:
      spec:
        template:
          spec:
            restartPolicy: Never
            containers: [{name: smoke, image: "reg/smoke:1"}]
"""
EXPIRES = "2026-11-25T18:00:00Z"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def expected_digest(text: str) -> str:
    return rollout_spec_digest(parse_rollout_spec(yaml.safe_load(text)["spec"]))


def lease_create(
    *extra: str, name: str = "checkout-2-3-1", expires: tuple[str, str] = ("--expires-at", EXPIRES)
) -> list[str]:
    return [
        "lease",
        "create",
        name,
        "-n",
        NS,
        "--target",
        "checkout",
        "--image",
        "app=reg/checkout@sha256:" + "a" * 64,
        "--intent",
        "INT-42: checkout 2.3.1",
        *expires,
        *extra,
    ]


def fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI expecting exit 1 and one ``error:`` line on stderr; return that line."""
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


# --------------------------------------------------------------------------------------------
# calyx rollout digest
# --------------------------------------------------------------------------------------------


def test_digest_of_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, "rollout.yaml", ROLLOUT)
    out, code = cli.run(["rollout", "digest", "-f", str(path)])
    assert code == 0
    assert out == expected_digest(ROLLOUT)
    assert out.startswith("sha256:") and len(out) == 71


def test_digest_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(ROLLOUT))
    out, _ = cli.run(["rollout", "digest", "-f", "-"])
    assert out == expected_digest(ROLLOUT)


def test_digest_ignores_paused_and_server_defaults(tmp_path: Path) -> None:
    plain = cli.run(["rollout", "digest", "-f", str(write(tmp_path, "a.yaml", ROLLOUT))])[0]
    as_stored = ROLLOUT.replace("  leaseRef:", "  paused: true\n  onBreach: Rollback\n  leaseRef:")
    stored = cli.run(["rollout", "digest", "-f", str(write(tmp_path, "b.yaml", as_stored))])[0]
    assert stored == plain
    changed = ROLLOUT.replace("maxPermille: 10", "maxPermille: 1000")
    assert cli.run(["rollout", "digest", "-f", str(write(tmp_path, "c.yaml", changed))])[0] != plain


BAD_ROLLOUT_FILES = [
    pytest.param("{", "not valid YAML", id="yaml"),
    pytest.param(
        ROLLOUT + "---\n" + ROLLOUT, "expected exactly one Rollout document, found 2", id="two"
    ),
    pytest.param("", "expected exactly one Rollout document, found 0", id="empty"),
    pytest.param(
        ROLLOUT.replace("kind: Rollout", "kind: Lease"),
        "not a rollouts.calyx.io object (apiVersion 'calyx.io/v1alpha1', kind 'Lease')",
        id="kind",
    ),
    pytest.param(
        ROLLOUT.replace("  name: checkout-2-3-1\n  namespace", "  namespace"),
        "metadata.name is missing",
        id="no-name",
    ),
    pytest.param(
        ROLLOUT.replace("weight: 5,", "weight: 500,"),
        "invalid rollouts.calyx.io: spec.tiers[0].weight",
        id="invalid-spec",
    ),
    pytest.param(
        ROLLOUT.replace("soakSeconds: 120", "soakSecond: 120"),
        "spec.tiers[0].soakSecond",
        id="typo",
    ),
    pytest.param(
        ROLLOUT.replace("restartPolicy: Never", "restartPolicy: Never\n            x: 0.5"),
        "spec cannot be digested: spec.postDeploy.jobTemplate.spec.template.spec.x: float 0.5",
        id="float-in-job",
    ),
]


@pytest.mark.parametrize(("text", "words"), BAD_ROLLOUT_FILES)
def test_digest_refuses_bad_files_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, words: str
) -> None:
    path = write(tmp_path, "rollout.yaml", text)
    err = fails(["rollout", "digest", "-f", str(path)], capsys)
    assert f"error: {path}: " in err and words in err


def test_digest_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = fails(["rollout", "digest", "-f", str(tmp_path / "nope.yaml")], capsys)
    assert "nope.yaml: no such file" in err


# --------------------------------------------------------------------------------------------
# calyx lease create --rollout
# --------------------------------------------------------------------------------------------


def test_lease_create_binds_the_rollout(tmp_path: Path) -> None:
    path = write(tmp_path, "rollout.yaml", ROLLOUT)
    out, _ = cli.run(lease_create("--rollout", str(path)))
    lease = yaml.safe_load(out)
    assert lease["spec"]["rolloutRef"] == {
        "name": "checkout-2-3-1",
        "specDigest": expected_digest(ROLLOUT),
    }
    parse_lease_spec(lease["spec"])  # what the operator will read
    assert "rolloutRef" not in yaml.safe_load(cli.run(lease_create())[0])["spec"]


def test_lease_create_accepts_a_rollout_without_namespace(tmp_path: Path) -> None:
    """`kubectl apply -n shop -f rollout.yaml` is common; the digest does not cover it."""
    path = write(tmp_path, "rollout.yaml", ROLLOUT.replace("  namespace: shop\n", ""))
    lease = yaml.safe_load(cli.run(lease_create("--rollout", str(path)))[0])
    assert lease["spec"]["rolloutRef"]["specDigest"] == expected_digest(ROLLOUT)


def test_lease_create_reads_the_rollout_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(ROLLOUT))
    lease = yaml.safe_load(cli.run(lease_create("--rollout", "-"))[0])
    assert lease["spec"]["rolloutRef"]["name"] == "checkout-2-3-1"


@pytest.mark.parametrize(
    ("text", "lease_name", "words"),
    [
        pytest.param(
            ROLLOUT.replace("namespace: shop", "namespace: pay"),
            "checkout-2-3-1",
            "Rollout namespace 'pay' differs from the lease's 'shop'",
            id="namespace",
        ),
        pytest.param(
            ROLLOUT,
            "checkout-2-3-2",
            "Rollout 'checkout-2-3-1' cites lease 'checkout-2-3-1' in spec.leaseRef, "
            "not 'checkout-2-3-2'",
            id="leaseRef",
        ),
        pytest.param(
            ROLLOUT.replace("kind: Rollout", "kind: Deployment"),
            "checkout-2-3-1",
            "not a rollouts.calyx.io object",
            id="not-a-rollout",
        ),
        pytest.param(
            ROLLOUT.replace("name: checkout-2-3-1\n  namespace", f"name: {'r' * 64}\n  namespace"),
            "checkout-2-3-1",
            "spec.rolloutRef.name",
            id="name-too-long",
        ),
    ],
)
def test_lease_create_refuses_a_rollout_it_could_not_bind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, lease_name: str, words: str
) -> None:
    path = write(tmp_path, "rollout.yaml", text)
    err = fails(lease_create("--rollout", str(path), name=lease_name), capsys)
    assert words in err


# --------------------------------------------------------------------------------------------
# The GitOps flow: both files committed, the Lease pre-signed twice
# --------------------------------------------------------------------------------------------


def _trust(tmp_path: Path) -> tuple[TrustStore, dict[str, Path]]:
    keys: dict[str, Path] = {}
    signers: dict[str, Signer] = {}
    for signer, role in (("alice", "human"), ("sentinel", "agent")):
        keys[signer] = tmp_path / f"{signer}.key"
        out, _ = cli.run(["keygen", str(keys[signer])])
        public = base64.b64decode(out.rsplit("public key: ", 1)[1])
        signers[signer] = Signer(signer, role, public)  # type: ignore[arg-type]
    return TrustStore(signers=signers, policy=Policy()), keys


def test_gitops_flow_pre_signed_lease_binds_the_committed_rollout(tmp_path: Path) -> None:
    trust, keys = _trust(tmp_path)
    rollout_path = write(tmp_path, "rollouts/checkout.yaml", ROLLOUT)
    out, _ = cli.run(lease_create("--rollout", str(rollout_path), expires=("--expires-in", "4h")))
    lease_path = write(tmp_path, "leases/checkout.yaml", out + "\n")
    for signer, role in (("alice", "human"), ("sentinel", "agent")):
        cli.run(
            [
                *("sign-lease", "-f", str(lease_path), "--key", str(keys[signer])),
                *("--signer", signer, "--role", role),
            ]
        )

    # What the operator sees once both files are applied.
    lease: dict[str, Any] = yaml.safe_load(lease_path.read_text())
    rollout: dict[str, Any] = yaml.safe_load(rollout_path.read_text())
    verdict = verify_lease(
        namespace=NS,
        name="checkout-2-3-1",
        spec=lease["spec"],
        annotations=lease["metadata"]["annotations"],
        trust=trust,
        now=dt.datetime.now(dt.UTC).replace(microsecond=0),
    )
    assert verdict.valid, verdict.reason

    def problem(rollout_spec: dict[str, Any], name: str = "checkout-2-3-1") -> str | None:
        return binding_problem(
            lease_spec=parse_lease_spec(lease["spec"]),
            rollout_name=name,
            rollout_spec=parse_rollout_spec(rollout_spec),
            require=trust.policy.require_rollout_binding,
        )

    assert problem(rollout["spec"]) is None
    assert problem({**rollout["spec"], "paused": True}) is None  # pause-rollout stays allowed

    # Someone with `edit` swaps the Job's image: the binding refuses it.
    job = rollout["spec"]["postDeploy"]["jobTemplate"]["spec"]["template"]["spec"]
    job["containers"][0]["image"] = "evil/miner:latest"
    refused = problem(rollout["spec"])
    assert refused is not None and "does not match the lease's rolloutRef.specDigest" in refused
    assert problem(yaml.safe_load(ROLLOUT)["spec"], name="checkout-copy") is not None

    # Editing rolloutRef in the signed Lease instead breaks both signatures.
    lease["spec"]["rolloutRef"]["specDigest"] = rollout_spec_digest(
        parse_rollout_spec(rollout["spec"])
    )
    verdict = verify_lease(
        namespace=NS,
        name="checkout-2-3-1",
        spec=lease["spec"],
        annotations=lease["metadata"]["annotations"],
        trust=trust,
        now=dt.datetime.now(dt.UTC).replace(microsecond=0),
    )
    assert not verdict.valid
    assert "signature does not match this lease" in verdict.reason
