"""Lease controller and CLI against the real local API server (issue 2)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from calyx.adapters.kube import Kube
from calyx.adapters.ledger_store import LedgerStore
from calyx.adapters.settings import Settings
from calyx.domain.ledger import LedgerEntry
from calyx.domain.timefmt import format_time
from tests.e2e.harness import (
    OPERATOR_NS,
    cosign,
    lease_body,
    lease_phase,
    reasons,
    trust_configmap,
    utcnow,
    wait_for,
)
from tests.e2e.plugin import apply_obj

pytestmark = [pytest.mark.e2e]


def cli(cluster: Any, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig, "CALYX_NAMESPACE": OPERATOR_NS}
    res = subprocess.run(
        [sys.executable, "-m", "calyx.cli.main", *args], env=env, capture_output=True, text=True
    )
    if check and res.returncode != 0:
        raise AssertionError(f"calyx {' '.join(args)} failed: {res.stderr}")
    return res


def status(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    return (kube.get_custom("leases", ns, name) or {}).get("status") or {}


def test_two_signatures_verify_and_announce_once(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    body = lease_body(
        ns, "l1", "checkout", {"app": "reg/checkout@sha256:" + "a" * 64}, signers=["alice"]
    )
    apply_obj(trust, body)
    wait_for("Rejected with one signature", lambda: lease_phase(kube, ns, "l1") == "Rejected")
    st = status(kube, ns, "l1")
    cond = st["conditions"][0]
    assert cond["type"] == "Verified" and cond["status"] == "False"
    assert "agent" in cond["message"]
    body["metadata"]["annotations"]["cosign.calyx.io/sentinel"] = cosign(body, "sentinel")
    apply_obj(trust, body)
    wait_for("Verified", lambda: lease_phase(kube, ns, "l1") == "Verified")
    st = status(kube, ns, "l1")
    assert st["digest"].startswith("sha256:")
    assert {c["id"]: c["valid"] for c in st["cosigners"]} == {"alice": True, "sentinel": True}
    assert st["observedGeneration"] == 1
    wait_for("events", lambda: "Verified2Key" in reasons(kube, ns, "l1"))
    # Let several sweeps pass: nothing is announced twice.
    import time

    time.sleep(3)
    rs = reasons(kube, ns, "l1")
    assert rs.count("Cosigned") == 2, rs
    assert rs.count("Verified2Key") == 1, rs


def test_forged_signature_is_reported_and_does_not_count(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    body = lease_body(ns, "forged", "checkout", {"app": "reg/x:1"})
    # Re-sign the agent's statement with bob's (human) key under sentinel's name.
    other = lease_body(ns, "forged", "checkout", {"app": "reg/x:2"}, signers=["sentinel"])
    body["metadata"]["annotations"]["cosign.calyx.io/sentinel"] = other["metadata"]["annotations"][
        "cosign.calyx.io/sentinel"
    ]
    apply_obj(trust, body)
    wait_for("Rejected", lambda: lease_phase(kube, ns, "forged") == "Rejected")
    st = status(kube, ns, "forged")
    bad = next(c for c in st["cosigners"] if c["id"] == "sentinel")
    assert bad["valid"] is False and bad["reason"]
    wait_for("SignatureInvalid event", lambda: "SignatureInvalid" in reasons(kube, ns, "forged"))
    # Both come out of one outbox write, posted one after the other: the second may be a few
    # milliseconds behind the first (this assertion flaked at 31 ms).
    wait_for("LeaseRejected event", lambda: "LeaseRejected" in reasons(kube, ns, "forged"))


def test_expiry_flips_phase_within_seconds(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    body = lease_body(ns, "short", "checkout", {"app": "reg/x:1"}, expires_in=6)
    expires = dt.datetime.fromisoformat(body["spec"]["expiresAt"].replace("Z", "+00:00"))
    apply_obj(trust, body)
    wait_for("Verified", lambda: lease_phase(kube, ns, "short") == "Verified")
    wait_for("Expired", lambda: lease_phase(kube, ns, "short") == "Expired", timeout=20)
    late = (dt.datetime.now(dt.UTC) - expires).total_seconds()
    assert late < 4.0, f"phase flipped {late:.1f}s after expiresAt"
    wait_for("LeaseExpired event", lambda: "LeaseExpired" in reasons(kube, ns, "short"))


def test_revoking_a_key_rejects_a_verified_lease_without_restart(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    starts = running_operator.starts
    apply_obj(trust, lease_body(ns, "rev", "checkout", {"app": "reg/x:1"}))
    wait_for("Verified", lambda: lease_phase(kube, ns, "rev") == "Verified")
    res = cli(trust, "trust", "remove", "sentinel")
    assert "removed sentinel" in res.stdout
    wait_for(
        "Rejected after revocation", lambda: lease_phase(kube, ns, "rev") == "Rejected", timeout=10
    )
    st = status(kube, ns, "rev")
    assert "sentinel" in next(c for c in st["cosigners"] if c["id"] == "sentinel")["reason"]
    assert running_operator.starts == starts


def test_broken_trust_store_fails_closed(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    apply_obj(trust, lease_body(ns, "tb", "checkout", {"app": "reg/x:1"}))
    wait_for("Verified", lambda: lease_phase(kube, ns, "tb") == "Verified")
    broken = trust_configmap(["alice", "sentinel"])
    broken["data"]["signers.yaml"] += "- {id: mallory, role: admin, publicKey: AAAA}\n"
    apply_obj(trust, broken)
    wait_for("Pending (trust store invalid)", lambda: lease_phase(kube, ns, "tb") == "Pending")
    cond = status(kube, ns, "tb")["conditions"][0]
    assert cond["reason"] == "TrustStoreInvalid" and "mallory" in cond["message"]


def test_cli_round_trip_live_and_git(
    kube: Kube, trust: Any, running_operator: Any, kube_namespace: str, tmp_path: Path
) -> None:
    ns = kube_namespace
    trust.kubectl("delete", "configmap", "calyx-trust", "-n", OPERATOR_NS)
    human, agent = tmp_path / "hana.key", tmp_path / "robo.key"
    out = cli(trust, "keygen", str(human)).stdout
    assert "public key:" in out and oct(human.stat().st_mode & 0o777) == "0o600"
    cli(trust, "keygen", str(agent))
    cli(trust, "trust", "add", "hana", "--role", "human", "--key", str(human))
    cli(trust, "trust", "add", "robo", "--role", "agent", "--key", str(agent))
    listing = cli(trust, "trust", "list").stdout
    assert "hana" in listing and "robo" in listing and "agent" in listing

    # Live object path.
    cli(
        trust,
        "lease",
        "create",
        "live",
        "-n",
        ns,
        "--target",
        "checkout",
        "--image",
        "app=reg/checkout:2.3.1",
        "--intent",
        "INT-42: fix rounding",
        "--expires-in",
        "2h",
        "--apply",
    )
    cli(trust, "sign-lease", "live", "-n", ns, "--key", str(human), "--signer", "hana")
    res = cli(trust, "verify-lease", "live", "-n", ns, check=False)
    assert res.returncode == 1 and "needs 1 valid agent" in res.stdout
    cli(
        trust,
        "sign-lease",
        "live",
        "-n",
        ns,
        "--key",
        str(agent),
        "--signer",
        "robo",
        "--role",
        "agent",
    )
    wait_for("Verified", lambda: lease_phase(kube, ns, "live") == "Verified")
    res = cli(trust, "verify-lease", "live", "-n", ns)
    assert "Verified" in res.stdout and res.stdout.count(" yes ") == 2

    # Git path: print YAML, pre-sign the file twice, apply it later with kubectl: no more steps.
    path = tmp_path / "lease.yaml"
    path.write_text(
        cli(
            trust,
            "lease",
            "create",
            "gitops",
            "-n",
            ns,
            "--target",
            "checkout",
            "--image",
            "app=reg/checkout:2.3.2",
            "--intent",
            "INT-43: ünïcode",
            "--expires-in",
            "2h",
        ).stdout
    )
    cli(trust, "sign-lease", "-f", str(path), "--key", str(human), "--signer", "hana")
    cli(
        trust,
        "sign-lease",
        "-f",
        str(path),
        "--key",
        str(agent),
        "--signer",
        "robo",
        "--role",
        "agent",
    )
    assert cli(trust, "verify-lease", "-f", str(path)).returncode == 0
    trust.kubectl("apply", "-f", str(path))
    wait_for("Git-signed lease Verified", lambda: lease_phase(kube, ns, "gitops") == "Verified")


def test_cli_refuses_readable_key_and_bad_input(trust: Any, tmp_path: Path) -> None:
    key = tmp_path / "k"
    cli(trust, "keygen", str(key))
    key.chmod(0o644)
    res = cli(trust, "sign-lease", "x", "--key", str(key), "--signer", "a", check=False)
    assert res.returncode == 1
    assert res.stderr.strip().startswith("error: key file") and "chmod 600" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = cli(trust, "keygen", str(key), check=False)
    assert res.returncode == 1 and "already exists" in res.stderr
    res = cli(trust, "trust", "add", "x", "--role", "human", "--public-key", "AAAA", check=False)
    assert res.returncode == 1 and "32" in res.stderr


def test_ledger_claim_has_exactly_one_winner(kube: Kube, calyx_crds: Any) -> None:
    settings = Settings(namespace=OPERATOR_NS, ledger_configmap="calyx-ledger-race")
    store = LedgerStore(kube, settings)
    now = utcnow()
    digest = "sha256:" + "b" * 64
    outcomes: list[Any] = []

    def claim(i: int) -> None:
        entry = LedgerEntry(
            digest=digest,
            namespace="shop",
            lease="l",
            rollout=f"r{i}",
            rollout_uid=f"uid-{i}",
            claimed_at=format_time(now),
            expires_at=format_time(now + dt.timedelta(hours=1)),
        )
        outcomes.append(store.claim(entry, now))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if o.won]
    assert len(winners) == 1
    holder = store.holder(digest)
    assert holder is not None and holder.rollout_uid == winners[0].entry.rollout_uid
    assert all(o.entry.rollout_uid == holder.rollout_uid for o in outcomes)
    # Prune after expiry.
    assert store.prune(now + dt.timedelta(hours=2)) and store.holder(digest) is None
    kube.delete_configmap(OPERATOR_NS, "calyx-ledger-race")
