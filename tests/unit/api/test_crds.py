"""The generated CRDs (crds/) are up to date, structural, and say what docs/api.md says."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from calyx.api import RolloutSpec, parse_rollout_spec
from calyx.api.crdgen import (
    LEASE_IMMUTABLE_MESSAGE,
    check,
    crd_manifests,
    main,
    rendered_crds,
)
from calyx.api.rollout import MAX_TIERS

REPO = Path(__file__).resolve().parents[3]
CRD_DIR = REPO / "crds"
LEASE_FILE = "leases.calyx.io.yaml"
ROLLOUT_FILE = "rollouts.calyx.io.yaml"


def crd(name: str) -> dict[str, Any]:
    return crd_manifests()[name]


def version(name: str) -> dict[str, Any]:
    versions = crd(name)["spec"]["versions"]
    assert len(versions) == 1
    v: dict[str, Any] = versions[0]
    return v


def root_schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = version(name)["schema"]["openAPIV3Schema"]
    return schema


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (properties, items, additionalProperties)."""
    yield path, node
    for key, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{key}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}.*")


# --------------------------------------------------------------------------------------------
# Drift
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("filename", [LEASE_FILE, ROLLOUT_FILE])
def test_crd_files_are_up_to_date(filename: str) -> None:
    path = CRD_DIR / filename
    assert path.is_file(), f"{path} missing: run `python -m calyx.api.crdgen`"
    assert path.read_text(encoding="utf-8") == rendered_crds()[filename], (
        f"{path} is out of date: run `python -m calyx.api.crdgen`"
    )


def test_check_mode_reports_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "is out of date; run `python -m calyx.api.crdgen`" in err
    assert main(["--out", str(tmp_path)]) == 0
    assert check(tmp_path)
    assert main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / LEASE_FILE).write_text(
        (tmp_path / LEASE_FILE).read_text().replace("clease", "xlease")
    )
    assert main(["--check", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "-    - xlease" in err and "+    - clease" in err


def test_files_parse_back_to_the_manifests() -> None:
    for name, text in rendered_crds().items():
        assert yaml.safe_load(text) == crd(name)


# --------------------------------------------------------------------------------------------
# Names, scope, columns
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filename, kind, plural, singular, short",
    [
        (LEASE_FILE, "Lease", "leases", "lease", "clease"),
        (ROLLOUT_FILE, "Rollout", "rollouts", "rollout", "crollout"),
    ],
)
def test_names_and_scope(filename: str, kind: str, plural: str, singular: str, short: str) -> None:
    m = crd(filename)
    assert m["apiVersion"] == "apiextensions.k8s.io/v1"
    assert m["kind"] == "CustomResourceDefinition"
    assert m["metadata"]["name"] == f"{plural}.calyx.io" == filename.removesuffix(".yaml")
    spec = m["spec"]
    assert spec["group"] == "calyx.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": singular,
        "shortNames": [short],
        "categories": ["calyx"],  # not "all": `kubectl get all` stays about workloads
    }
    v = version(filename)
    assert (v["name"], v["served"], v["storage"]) == ("v1alpha1", True, True)
    assert v["subresources"] == {"status": {}}


def _columns(filename: str) -> list[tuple[str, str, str]]:
    return [
        (c["name"], c["type"], c["jsonPath"]) for c in version(filename)["additionalPrinterColumns"]
    ]


def test_lease_printer_columns() -> None:
    assert _columns(LEASE_FILE) == [
        ("Phase", "string", ".status.phase"),
        ("Target", "string", ".spec.targetRef.name"),
        ("Expires", "string", ".spec.expiresAt"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]


def test_rollout_printer_columns() -> None:
    assert _columns(ROLLOUT_FILE) == [
        ("Phase", "string", ".status.phase"),
        ("Lease", "string", ".spec.leaseRef.name"),
        ("Weight", "integer", ".status.currentWeight"),
        ("Effective", "integer", ".status.effectivePercent"),
        ("Risk", "string", ".status.risk.level"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]


@pytest.mark.parametrize("filename", [LEASE_FILE, ROLLOUT_FILE])
def test_printer_columns_point_at_schema_fields(filename: str) -> None:
    schema = root_schema(filename)
    for _, _, json_path in _columns(filename):
        if json_path.startswith(".metadata."):
            continue
        node = schema
        for part in json_path.lstrip(".").split("."):
            node = node["properties"][part]
        assert node["type"] in ("string", "integer")


# --------------------------------------------------------------------------------------------
# Structural schema
# --------------------------------------------------------------------------------------------

FORBIDDEN_KEYS = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "title", "const", "examples"}


@pytest.mark.parametrize("filename", [LEASE_FILE, ROLLOUT_FILE])
def test_schema_is_structural(filename: str) -> None:
    for path, node in walk(root_schema(filename)):
        assert not FORBIDDEN_KEYS & set(node), f"{path}: {FORBIDDEN_KEYS & set(node)}"
        assert (
            "type" in node
            or node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")
        ), f"{path} has no type"
        assert node.get("additionalProperties") is not False, f"{path}: additionalProperties false"
        if "additionalProperties" in node:
            assert "properties" not in node, f"{path}: properties and additionalProperties"
        for name in node.get("required", []):
            assert name in node.get("properties", {}), f"{path}: required {name} not a property"
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            assert set(keys) <= set(node["items"].get("required", [])), path


@pytest.mark.parametrize("filename", [LEASE_FILE, ROLLOUT_FILE])
def test_spec_lists_and_strings_are_bounded_for_cel(filename: str) -> None:
    spec = root_schema(filename)["properties"]["spec"]
    for path, node in walk(spec, ".spec"):
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path}: unbounded list"
        if node.get("type") == "string":
            assert "maxLength" in node or "enum" in node, f"{path}: unbounded string"


@pytest.mark.parametrize("filename", [LEASE_FILE, ROLLOUT_FILE])
def test_spec_fields_are_documented(filename: str) -> None:
    spec = root_schema(filename)["properties"]["spec"]
    for path, node in walk(spec, ".spec"):
        if path.endswith(".jobTemplate.metadata") or path.endswith(".jobTemplate.spec"):
            continue
        assert node.get("description"), f"{path} has no description (kubectl explain)"
        assert "``" not in node["description"] and "DESIGN" not in node["description"], path


def test_no_defaults_anywhere_in_lease() -> None:
    for path, node in walk(root_schema(LEASE_FILE)):
        assert "default" not in node, f"{path}: the Lease schema must not default anything"


def test_integers_are_integers() -> None:
    """No `number` in any spec: integers only (docs/design.md §API)."""
    for filename in (LEASE_FILE, ROLLOUT_FILE):
        for path, node in walk(root_schema(filename)["properties"]["spec"], ".spec"):
            assert node.get("type") != "number", f"{path} is a number"


def test_conditions_are_list_maps_keyed_by_type() -> None:
    for filename in (LEASE_FILE, ROLLOUT_FILE):
        conditions = root_schema(filename)["properties"]["status"]["properties"]["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]
        item = conditions["items"]
        assert set(item["required"]) == {"type", "status", "lastTransitionTime", "reason"}
        assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
        assert item["properties"]["lastTransitionTime"]["format"] == "date-time"


def test_lease_expires_at_is_a_utc_date_time() -> None:
    node = root_schema(LEASE_FILE)["properties"]["spec"]["properties"]["expiresAt"]
    assert node["type"] == "string" and node["format"] == "date-time"
    assert node["pattern"].endswith("Z$")


def test_container_names_are_a_list_map() -> None:
    spec = root_schema(LEASE_FILE)["properties"]["spec"]
    containers = spec["properties"]["change"]["properties"]["containers"]
    assert containers["x-kubernetes-list-map-keys"] == ["name"]
    assert containers["minItems"] == 1


def test_lease_rollout_ref_is_optional_and_pins_a_sha256() -> None:
    """docs/signing.md, "Binding the rollout": optional, no default, both fields required."""
    spec = root_schema(LEASE_FILE)["properties"]["spec"]
    assert "rolloutRef" not in spec["required"]
    ref = spec["properties"]["rolloutRef"]
    assert ref["required"] == ["name", "specDigest"]
    assert ref["properties"]["specDigest"]["pattern"] == "^sha256:[0-9a-f]{64}$"
    assert ref["properties"]["name"]["maxLength"] == 63  # a Rollout name is a label value


# --------------------------------------------------------------------------------------------
# CEL rules
# --------------------------------------------------------------------------------------------


def test_lease_spec_is_immutable() -> None:
    spec = root_schema(LEASE_FILE)["properties"]["spec"]
    assert spec["x-kubernetes-validations"] == [
        {"rule": "self == oldSelf", "message": LEASE_IMMUTABLE_MESSAGE}
    ]
    assert LEASE_IMMUTABLE_MESSAGE == (
        "spec is immutable: create a new Lease (signatures cover the spec)"
    )


def test_rollout_lease_ref_is_immutable() -> None:
    lease_ref = root_schema(ROLLOUT_FILE)["properties"]["spec"]["properties"]["leaseRef"]
    (rule,) = lease_ref["x-kubernetes-validations"]
    assert rule["rule"] == "self == oldSelf"
    assert rule["message"].startswith("leaseRef is immutable")


def test_rollout_tier_rules() -> None:
    tiers = root_schema(ROLLOUT_FILE)["properties"]["spec"]["properties"]["tiers"]
    assert tiers["maxItems"] == MAX_TIERS and tiers["minItems"] == 1
    weight = tiers["items"]["properties"]["weight"]
    assert (weight["type"], weight["minimum"], weight["maximum"]) == ("integer", 1, 100)
    rules = {r["message"]: r["rule"] for r in tiers["x-kubernetes-validations"]}
    increasing = rules["tier weights must be strictly increasing"]
    # The index list covers every adjacent pair a list of maxItems can have.
    assert increasing.startswith(f"[{', '.join(str(i) for i in range(MAX_TIERS - 1))}].all(i, ")
    assert (
        "self[self.size() - 1].weight == 100"
        in rules["the last tier must have weight 100 (promotion)"]
    )


def test_rollout_name_fits_a_label_value() -> None:
    (rule,) = root_schema(ROLLOUT_FILE)["x-kubernetes-validations"]
    assert rule["rule"] == "self.metadata.name.size() <= 63"


# --------------------------------------------------------------------------------------------
# Rollout defaults: server-side (schema) defaulting == code defaulting
# --------------------------------------------------------------------------------------------


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """A small model of apiextensions structural defaulting (set missing, then recurse)."""
    if isinstance(value, dict) and "properties" in schema:
        for key, sub in schema["properties"].items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = apply_defaults(value[key], sub)
    elif isinstance(value, list) and "items" in schema:
        return [apply_defaults(v, schema["items"]) for v in value]
    return value


@pytest.mark.parametrize(
    "raw",
    [
        {"leaseRef": {"name": "l"}},
        {"leaseRef": {"name": "l"}, "tiers": [{"weight": 10}, {"weight": 100}]},
        {"leaseRef": {"name": "l"}, "analysis": {"tes": {"maxDropPercent": 5}}},
        {"leaseRef": {"name": "l"}, "postDeploy": {"jobTemplate": {"spec": {}}}},
    ],
)
def test_schema_defaults_equal_model_defaults(raw: dict[str, Any]) -> None:
    spec_schema = root_schema(ROLLOUT_FILE)["properties"]["spec"]
    defaulted = apply_defaults(copy.deepcopy(raw), spec_schema)
    from_code = parse_rollout_spec(raw)
    from_server = parse_rollout_spec(defaulted)
    assert from_server == from_code
    # What the server stores is exactly what the model dumps (no more, no less).
    assert defaulted == from_code.model_dump(mode="json", exclude_none=True)


def test_rollout_defaults_are_visible() -> None:
    props = root_schema(ROLLOUT_FILE)["properties"]["spec"]["properties"]
    assert props["paused"]["default"] is False
    assert props["onBreach"]["default"] == "Rollback"
    assert props["analysis"]["default"] == {}
    assert props["analysis"]["properties"]["intervalSeconds"]["default"] == 10
    assert props["analysis"]["properties"]["intervalSeconds"]["minimum"] == 1
    assert "default" not in props["tiers"]  # from the risk score
    assert isinstance(RolloutSpec.model_fields["tiers"].default, type(None))
