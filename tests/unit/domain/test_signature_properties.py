"""Property: any single-byte change to what is signed, or to the signature, is rejected.

This is the tamper-evidence promise stated as a property rather than a handful of examples:
hypothesis picks the byte and its replacement, across the spec, the canonical statement, the raw
signature, its base64 text and the annotation value.
"""

from __future__ import annotations

import base64
import json

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from calyx.domain.canonical import canonical_json
from calyx.domain.signatures import (
    lease_statement,
    pae,
    public_key_from_seed,
    sign_statement,
    verify_statement,
)
from calyx.domain.verification import verify_lease
from tests.unit.domain.test_verification import NOW, alice, make_trust, sentinel
from tests.vectors.make_vectors import (
    ALICE_SEED,
    NAME,
    NAMESPACE,
    SIGNED_AT,
    SPEC,
)

ALICE_KEY = public_key_from_seed(ALICE_SEED)
STATEMENT = lease_statement(NAMESPACE, NAME, SPEC, "alice", "human", SIGNED_AT)
STATEMENT_BYTES = canonical_json(STATEMENT)
SIG = sign_statement(STATEMENT, ALICE_SEED)
SPEC_BYTES = canonical_json(SPEC)
ANNOTATIONS = dict([alice(), sentinel()])
TRUST = make_trust()

PROPERTY = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.filter_too_much]
)


def flip(data: bytes, index: int, value: int) -> bytes:
    """Replace one byte with a different one (``value`` 1..255 is added modulo 256)."""
    i = index % len(data)
    return data[:i] + bytes([(data[i] + value) % 256]) + data[i + 1 :]


def _verify_spec(spec: object) -> bool:
    assert isinstance(spec, dict)
    verdict = verify_lease(
        namespace=NAMESPACE, name=NAME, spec=spec, annotations=ANNOTATIONS, trust=TRUST, now=NOW
    )
    return verdict.valid


def test_baseline_is_valid() -> None:
    assert _verify_spec(SPEC)
    assert verify_statement(STATEMENT, SIG, ALICE_KEY)


@PROPERTY
@given(st.integers(min_value=0), st.integers(min_value=1, max_value=255))
def test_any_spec_byte_change_is_rejected(index: int, delta: int) -> None:
    mutated = flip(SPEC_BYTES, index, delta)
    try:
        spec = json.loads(mutated.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return  # not even a spec the API server would store
    assume(spec != SPEC)
    if not isinstance(spec, dict):
        return
    assert not _verify_spec(spec)


@PROPERTY
@given(st.integers(min_value=0), st.integers(min_value=1, max_value=255))
def test_any_statement_byte_change_is_rejected(index: int, delta: int) -> None:
    mutated = flip(STATEMENT_BYTES, index, delta)
    try:
        VerifyKey(ALICE_KEY).verify(pae(mutated), base64.b64decode(SIG))
        raise AssertionError("mutated statement bytes verified")
    except BadSignatureError:
        pass
    try:
        statement = json.loads(mutated.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return
    if isinstance(statement, dict) and statement != STATEMENT:
        assert not verify_statement(statement, SIG, ALICE_KEY)


@PROPERTY
@given(st.integers(min_value=0), st.integers(min_value=1, max_value=255))
def test_any_raw_signature_byte_change_is_rejected(index: int, delta: int) -> None:
    raw = flip(base64.b64decode(SIG), index, delta)
    assert not verify_statement(STATEMENT, base64.b64encode(raw).decode(), ALICE_KEY)


@PROPERTY
@given(st.integers(min_value=0), st.integers(min_value=1, max_value=127))
def test_any_base64_character_change_is_rejected(index: int, delta: int) -> None:
    text = flip(SIG.encode("ascii"), index, delta)
    assume(text.isascii())
    assert not verify_statement(STATEMENT, text.decode("ascii"), ALICE_KEY)


@PROPERTY
@given(
    st.sampled_from(sorted(ANNOTATIONS)),
    st.integers(min_value=0),
    st.integers(min_value=1, max_value=255),
)
def test_any_annotation_value_byte_change_is_rejected(key: str, index: int, delta: int) -> None:
    value = flip(ANNOTATIONS[key].encode("utf-8"), index, delta)
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return
    annotations = {**ANNOTATIONS, key: text}
    verdict = verify_lease(
        namespace=NAMESPACE, name=NAME, spec=SPEC, annotations=annotations, trust=TRUST, now=NOW
    )
    assert not verdict.valid
    assert verdict.rule == 3
