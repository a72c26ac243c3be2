import pytest

from calyx.domain.batch import batch_queries, combine, namespace_selector

C1, C2 = "checkout-canary-7d9f8b6c5d-x2x4z", "checkout-canary-7d9f8b6c5d-b7n9q"
S1, S2 = "checkout-5c4b9d8f7b-k8s9p", "checkout-5c4b9d8f7b-m2n4r"
API = "checkout-api-6b7c8d9f5f-zzq8w"  # a neighbour whose name starts with the target's


def vec(**pods: float) -> dict[tuple[str, str], float]:
    names = {"c1": C1, "c2": C2, "s1": S1, "s2": S2, "api": API}
    return {("shop", names[k]): v for k, v in pods.items()}


@pytest.mark.parametrize(
    ("metric", "parts", "side", "expected"),
    [
        ("tes", {"value": vec(c1=90, c2=94, s1=100, api=1)}, "canary", 92.0),
        ("tes", {"value": vec(c1=90, s1=100, s2=98, api=1)}, "baseline", 99.0),
        ("cpu", {"value": vec(c1=40, c2=95, s1=99, api=500)}, "canary", 95.0),
        ("memory", {"value": vec(c1=40, s1=60, s2=70)}, "baseline", 70.0),
        # sum of errors over sum of requests, per side: (1 + 3) / (100 + 100) = 20 ‰
        (
            "errorRate",
            {"errors": vec(c1=1, c2=3, api=50), "requests": vec(c1=100, c2=100, api=60)},
            "canary",
            20.0,
        ),
        # no 5xx series at all is a perfect score, not no data
        ("errorRate", {"errors": {}, "requests": vec(s1=10, s2=30)}, "baseline", 0.0),
    ],
)
def test_combine_matches_the_default_templates(metric, parts, side, expected) -> None:  # type: ignore[no-untyped-def]
    out = combine(metric, parts, "shop", "checkout", side)
    assert out.kind == "value" and out.value == pytest.approx(expected)


@pytest.mark.parametrize(
    ("metric", "parts", "side"),
    [
        ("tes", {"value": vec(s1=100)}, "canary"),  # canary exposes nothing
        ("errorRate", {"errors": {}, "requests": vec(s1=10)}, "canary"),
        ("errorRate", {"errors": {}, "requests": vec(c1=0.0)}, "canary"),  # 0/0: no traffic
        ("cpu", {"value": vec(c1=float("nan"))}, "canary"),
        ("tes", {"value": {("other-ns", C1): 5.0}}, "canary"),  # other namespaces never count
    ],
)
def test_missing_data_is_no_data_never_a_pass(metric, parts, side) -> None:  # type: ignore[no-untyped-def]
    out = combine(metric, parts, "shop", "checkout", side)
    assert out.kind == "empty" and out.value is None and out.detail


def test_queries_group_by_pod_over_all_namespaces() -> None:
    qs = batch_queries("errorRate", ["b", "a", "a"], 30)
    assert set(qs) == {"errors", "requests"}
    for q in qs.values():
        assert 'namespace=~"a|b"' in q and "by (namespace, pod)" in q and "[30s]" in q


@pytest.mark.parametrize("bad", ['a"b', "a|b", "", "a.b"])
def test_namespace_selector_refuses_non_names(bad: str) -> None:
    with pytest.raises(ValueError, match="not a namespace name"):
        namespace_selector([bad])
