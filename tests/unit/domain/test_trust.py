"""Trust store parsing (docs/signing.md §7): one row per way a ConfigMap can be wrong."""

from __future__ import annotations

import base64

import pytest

from calyx.domain.signatures import public_key_from_seed
from calyx.domain.trust import (
    Policy,
    RolloutBinding,
    Signer,
    TrustStoreError,
    dump_signers_yaml,
    parse_trust_store,
)

ALICE_KEY = public_key_from_seed(b"\x01" * 32)
SENTINEL_KEY = public_key_from_seed(b"\x02" * 32)
A = base64.b64encode(ALICE_KEY).decode()
S = base64.b64encode(SENTINEL_KEY).decode()

GOOD_SIGNERS = f"""
- {{id: alice, role: human, publicKey: {A}, namespaces: ["shop", "pay-*"]}}
- {{id: sentinel, role: agent, publicKey: {S}}}
"""
GOOD_POLICY = """
humans: 2
agents: 1
maxSignatureAgeSeconds: 600
maxLeaseSeconds: 7200
clockSkewSeconds: 0
"""


def test_parse_good_store() -> None:
    store = parse_trust_store(GOOD_SIGNERS, GOOD_POLICY)
    assert store.signers == {
        "alice": Signer("alice", "human", ALICE_KEY, ("shop", "pay-*")),
        "sentinel": Signer("sentinel", "agent", SENTINEL_KEY, None),
    }
    assert store.policy == Policy(
        humans=2,
        agents=1,
        max_signature_age_seconds=600,
        max_lease_seconds=7200,
        clock_skew_seconds=0,
    )


@pytest.mark.parametrize("policy", [None, "", "# nothing\n", "{}"])
def test_missing_policy_means_defaults(policy: str | None) -> None:
    assert parse_trust_store(GOOD_SIGNERS, policy).policy == Policy()


@pytest.mark.parametrize("signers", [None, "", "[]", "# nobody yet\n"])
def test_empty_signers(signers: str | None) -> None:
    assert parse_trust_store(signers, None).signers == {}


def test_partial_policy_keeps_other_defaults() -> None:
    assert parse_trust_store(None, "agents: 2").policy == Policy(agents=2)


def test_rollout_binding_defaults_to_post_deploy() -> None:
    """A postDeploy Job runs a pod of the Rollout author's choosing: bound unless said otherwise
    (docs/signing.md, trust store)."""
    assert Policy().require_rollout_binding == "postDeploy"
    assert parse_trust_store(None, None).policy.require_rollout_binding == "postDeploy"
    assert parse_trust_store(None, GOOD_POLICY).policy.require_rollout_binding == "postDeploy"


@pytest.mark.parametrize("value", ["postDeploy", "always"])
def test_rollout_binding_values(value: RolloutBinding) -> None:
    policy = parse_trust_store(None, f"humans: 2\nrequireRolloutBinding: {value}\n").policy
    assert policy == Policy(humans=2, require_rollout_binding=value)


@pytest.mark.parametrize(
    ("namespaces", "namespace", "allowed"),
    [
        (None, "anything", True),
        (("shop",), "shop", True),
        (("shop",), "shop-eu", False),
        (("pay-*",), "pay-eu", True),
        (("pay-*",), "pay", False),
        (("team-?",), "team-a", True),
        (("team-[ab]",), "team-c", False),
        (("team-[!ab]",), "team-c", True),
        (("shop",), "SHOP", False),
    ],
)
def test_signer_allows(namespaces: tuple[str, ...] | None, namespace: str, allowed: bool) -> None:
    assert Signer("x", "human", ALICE_KEY, namespaces).allows(namespace) is allowed


def entry(**fields: str) -> str:
    base = {"id": "alice", "role": "human", "publicKey": A}
    base.update(fields)
    inner = ", ".join(f"{k}: {v}" for k, v in base.items() if v != "")
    return f"- {{{inner}}}\n"


@pytest.mark.parametrize(
    ("signers", "message"),
    [
        (
            "- {id: alice\n",
            "signers.yaml: invalid YAML: expected ',' or '}', but got '<stream end>' at line 2",
        ),
        ("{id: alice}", "signers.yaml: must be a YAML list of signers, got mapping"),
        ("alice", "signers.yaml: must be a YAML list of signers, got string"),
        ("- alice\n", "signers.yaml[0]: must be a mapping with id, role, publicKey, got string"),
        (entry(id=""), "signers.yaml[0]: missing field 'id'"),
        (entry(id="Alice"), "signers.yaml[0]: signer id 'Alice' is invalid (lowercase letters"),
        (entry(id="al/ice"), "signers.yaml[0]: signer id 'al/ice' is invalid"),
        (entry(id="a" * 64), "signers.yaml[0]: signer id 'aaaa"),
        (entry(id="2024"), "signers.yaml[0]: signer id must be a string, got int"),
        (entry(role=""), "signers.yaml[0] (id 'alice'): missing field 'role'"),
        (entry(publicKey=""), "signers.yaml[0] (id 'alice'): missing field 'publicKey'"),
        (
            entry(role="admin"),
            "signers.yaml[0] (id 'alice'): unknown role 'admin' (must be 'human' or 'agent')",
        ),
        (
            entry(publicKey="not*base64"),
            "signers.yaml[0] (id 'alice'): publicKey is not valid base64",
        ),
        (
            entry(publicKey="12"),
            "signers.yaml[0] (id 'alice'): publicKey must be a base64 string, got integer",
        ),
        (
            entry(publicKey=base64.b64encode(b"\x01" * 64).decode()),
            "signers.yaml[0] (id 'alice'): publicKey is 64 bytes, an Ed25519 public key is 32 "
            "(did you paste the private seed or a PEM file?)",
        ),
        (entry(publicKey=base64.b64encode(b"\x01" * 31).decode()), "publicKey is 31 bytes"),
        (
            entry(email="a@example.com"),
            "signers.yaml[0] (id 'alice'): unknown field 'email' "
            "(allowed: id, role, publicKey, namespaces)",
        ),
        (entry(namespace="[shop]"), "signers.yaml[0] (id 'alice'): unknown field 'namespace'"),
        (
            entry(namespaces="shop"),
            "signers.yaml[0] (id 'alice'): namespaces must be a list of globs, got string",
        ),
        (
            entry(namespaces="[]"),
            "signers.yaml[0] (id 'alice'): namespaces is empty (omit it to allow every namespace)",
        ),
        (
            entry(namespaces='[""]'),
            "signers.yaml[0] (id 'alice'): namespaces[0] is an empty string",
        ),
        (
            entry(namespaces="[shop, 7]"),
            "signers.yaml[0] (id 'alice'): namespaces[1] must be a string, got integer",
        ),
        (
            entry(namespaces='["pay-[ab"]'),
            "signers.yaml[0] (id 'alice'): namespaces[0] 'pay-[ab' has an unbalanced or "
            "empty '[...]'",
        ),
        (
            entry(namespaces='["pay-ab]"]'),
            "namespaces[0] 'pay-ab]' has an unbalanced or empty '[...]'",
        ),
        (
            entry(namespaces='["pay-[]"]'),
            "namespaces[0] 'pay-[]' has an unbalanced or empty '[...]'",
        ),
        (
            entry(namespaces='["Shop"]'),
            "namespaces[0] 'Shop' is not a namespace glob (lowercase letters, digits",
        ),
        (entry(namespaces='["shop eu"]'), "namespaces[0] 'shop eu' is not a namespace glob"),
        (
            entry(namespaces='["!shop"]'),
            "namespaces[0] '!shop': '!' is only allowed right after '['",
        ),
        (entry() + entry(publicKey=S), "signers.yaml[1] (id 'alice'): duplicate id"),
        (
            entry() + entry(id="alice2"),
            "signers.yaml[1] (id 'alice2'): duplicate publicKey, already used by 'alice' "
            "(one key must never count as two signers)",
        ),
        (
            f"- {{id: alice, role: human, role: agent, publicKey: {A}}}\n",
            "signers.yaml: invalid YAML: duplicate key 'role' at line 1, column 28",
        ),
    ],
    ids=[
        "bad-yaml",
        "not-a-list",
        "scalar",
        "entry-not-mapping",
        "missing-id",
        "uppercase-id",
        "slash-id",
        "long-id",
        "numeric-id",
        "missing-role",
        "missing-key",
        "unknown-role",
        "bad-base64",
        "key-not-string",
        "key-64-bytes",
        "key-31-bytes",
        "unknown-field",
        "namespace-singular-typo",
        "namespaces-not-list",
        "namespaces-empty-list",
        "empty-glob",
        "non-string-glob",
        "unbalanced-bracket",
        "stray-close-bracket",
        "empty-bracket",
        "uppercase-glob",
        "space-in-glob",
        "bang-outside-bracket",
        "duplicate-id",
        "duplicate-key",
        "yaml-duplicate-field",
    ],
)
def test_signers_errors(signers: str, message: str) -> None:
    with pytest.raises(TrustStoreError) as info:
        parse_trust_store(signers, None)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_duplicate_yaml_field_names_the_key() -> None:
    with pytest.raises(TrustStoreError, match="duplicate key 'role'"):
        parse_trust_store(f"- {{id: alice, role: human, role: agent, publicKey: {A}}}\n", None)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("humans: [1", "policy.yaml: invalid YAML"),
        ("- humans: 1", "policy.yaml: must be a YAML mapping, got list"),
        ("humans: 1\nhuman: 2", "policy.yaml: unknown field 'human' (allowed: humans, agents, "),
        ("maxLeaseHours: 3", "policy.yaml: unknown field 'maxLeaseHours'"),
        ("humans: one", "policy.yaml: humans must be an integer, got string"),
        ("humans: 1.5", "policy.yaml: humans must be an integer, got float"),
        ("agents: true", "policy.yaml: agents must be an integer, got boolean"),
        ("maxLeaseSeconds: null", "policy.yaml: maxLeaseSeconds must be an integer, got null"),
        ("humans: 0", "policy.yaml: humans must be >= 1, got 0"),
        ("agents: 0", "policy.yaml: agents must be >= 1, got 0"),
        ("maxSignatureAgeSeconds: -1", "policy.yaml: maxSignatureAgeSeconds must be >= 1, got -1"),
        ("maxLeaseSeconds: 0", "policy.yaml: maxLeaseSeconds must be >= 1, got 0"),
        ("clockSkewSeconds: -5", "policy.yaml: clockSkewSeconds must be >= 0, got -5"),
        (
            "humans: 1\nhumans: 2",
            "policy.yaml: invalid YAML: duplicate key 'humans' at line 2, column 1",
        ),
        (
            "requireRolloutBinding: Always",
            "policy.yaml: requireRolloutBinding must be one of 'postDeploy', 'always', "
            "got 'Always'",
        ),
        (
            "requireRolloutBinding: never",
            "policy.yaml: requireRolloutBinding must be one of 'postDeploy', 'always', got 'never'",
        ),
        ('requireRolloutBinding: ""', "requireRolloutBinding must be one of 'postDeploy', "),
        ("requireRolloutBinding: true", "requireRolloutBinding must be one of 'postDeploy', "),
        ("requireRolloutBinding:", "'postDeploy', 'always', got null"),
        ("requireRolloutBinding: [always]", "'postDeploy', 'always', got list"),
        ("requireRolloutBinding: 1", "'postDeploy', 'always', got integer"),
        (
            "requireBinding: always",
            "policy.yaml: unknown field 'requireBinding' (allowed: humans, agents, "
            "maxSignatureAgeSeconds, maxLeaseSeconds, clockSkewSeconds, requireRolloutBinding)",
        ),
    ],
    ids=[
        "bad-yaml",
        "not-mapping",
        "typo-field",
        "unknown-field",
        "string",
        "float",
        "bool",
        "null",
        "zero-humans",
        "zero-agents",
        "negative-age",
        "zero-lease",
        "negative-skew",
        "duplicate-field",
        "binding-case",
        "binding-unknown",
        "binding-empty",
        "binding-bool",
        "binding-null",
        "binding-list",
        "binding-int",
        "binding-typo-field",
    ],
)
def test_policy_errors(policy: str, message: str) -> None:
    with pytest.raises(TrustStoreError) as info:
        parse_trust_store(GOOD_SIGNERS, policy)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "signers",
    [
        [],
        [Signer("alice", "human", ALICE_KEY, ("shop", "pay-*", "team-[!x]"))],
        [
            Signer("sentinel", "agent", SENTINEL_KEY, None),
            Signer("alice.smith-2", "human", ALICE_KEY, ("shop",)),
        ],
    ],
    ids=["empty", "one-with-globs", "order-kept"],
)
def test_dump_round_trips(signers: list[Signer]) -> None:
    text = dump_signers_yaml(signers)
    store = parse_trust_store(text, None)
    assert list(store.signers.values()) == signers
    assert all(line.startswith("- {") for line in text.splitlines() if signers)


def test_dump_format() -> None:
    text = dump_signers_yaml([Signer("sentinel", "agent", SENTINEL_KEY, None)])
    assert text == f"- {{id: sentinel, role: agent, publicKey: {S}}}\n"
