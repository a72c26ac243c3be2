"""Default templates, pod regexes and the tiny template renderer."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calyx.domain import promql
from calyx.domain.promql import (
    DEFAULT_TEMPLATES,
    POD_HASH_CHARS,
    TemplateError,
    canary_pod_regex,
    classify_pod,
    is_side_aware,
    render,
    stable_pod_regex,
    template_vars,
)

VARS = template_vars("shop", "checkout", 30)


@pytest.mark.parametrize(
    ("pod", "target", "side"),
    [
        ("checkout-7d9f8b6c5d-x2k4z", "checkout", "baseline"),
        ("checkout-5f7b9c-x2k4z", "checkout", "baseline"),  # short hash
        ("checkout-canary-7d9f8b6c5d-x2k4z", "checkout", "canary"),
        ("checkout-api-7d9f8b6c5d-x2k4z", "checkout", None),  # a neighbouring Deployment
        ("checkout-api-canary-7d9f8b6c5d-x2k4z", "checkout", None),
        ("checkout-api-7d9f8b6c5d-x2k4z", "checkout-api", "baseline"),
        ("checkout-api-canary-7d9f8b6c5d-x2k4z", "checkout-api", "canary"),
        ("checkout-canary-7d9f8b6c5d-x2k4z", "checkout-api", None),
        ("checkout-7d9f8b6c5d", "checkout", None),  # no pod suffix
        ("checkout-7d9f8b6c5d-x2k4z-extra", "checkout", None),
        ("xcheckout-7d9f8b6c5d-x2k4z", "checkout", None),  # anchored at the start
        ("checkout-7d9f8b6c5d-X2K4Z", "checkout", None),
        ("web.v2-7d9f8b6c5d-x2k4z", "web.v2", "baseline"),
        ("webxv2-7d9f8b6c5d-x2k4z", "web.v2", None),  # '.' is literal
        ("checkout-0-x2k4z", "checkout", None),  # 0 is not in the hash alphabet
    ],
)
def test_classify_pod(pod: str, target: str, side: str | None) -> None:
    assert classify_pod(pod, target) == side


_hash = st.text(alphabet=POD_HASH_CHARS, min_size=1, max_size=10)
_sfx = st.text(alphabet=POD_HASH_CHARS, min_size=5, max_size=5)
_name = st.from_regex(r"[a-z]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)


@given(target=_name, other=_name, h=_hash, s=_sfx)
def test_regexes_never_confuse_canary_stable_or_neighbours(
    target: str, other: str, h: str, s: str
) -> None:
    stable_pod = f"{target}-{h}-{s}"
    canary_pod = f"{target}-canary-{h}-{s}"
    assert classify_pod(stable_pod, target) == "baseline"
    assert classify_pod(canary_pod, target) == "canary"
    # A pod of another Deployment never counts for this target, whatever the names.
    if other not in (target, f"{target}-canary"):
        assert classify_pod(f"{other}-{h}-{s}", target) is None


def test_regexes_are_plain_promql_strings() -> None:
    """No backslashes: the regex goes inside a double-quoted PromQL string unescaped."""
    for regex in (canary_pod_regex("a.b"), stable_pod_regex("a.b")):
        assert "\\" not in regex and '"' not in regex
        re.compile(regex)


def test_template_vars() -> None:
    assert VARS.canary == "checkout-canary"
    assert VARS.window == "30s"
    canary = VARS.for_side("canary")
    baseline = VARS.for_side("baseline")
    assert canary["pod_regex"] == VARS.canary_pod_regex
    assert baseline["pod_regex"] == VARS.stable_pod_regex
    assert set(canary) == set(promql.TEMPLATE_VARIABLES)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("x{{ namespace }}y", "xshopy"),
        ("{{namespace}}/{{   target }}/{{ canary }}", "shop/checkout/checkout-canary"),
        ("rate(x[{{ window }}])", "rate(x[30s])"),
        ('up{pod=~"{{ canary_pod_regex }}"}', f'up{{pod=~"{VARS.canary_pod_regex}"}}'),
        ("no placeholders", "no placeholders"),
    ],
)
def test_render(template: str, expected: str) -> None:
    assert render(template, VARS.for_side("canary")) == expected


@pytest.mark.parametrize(
    ("template", "variables", "message"),
    [
        ("{{ nmespace }}", None, "unknown template variable {{ nmespace }}"),
        ("{{ namespace | upper }}", None, "unknown template variable"),
        ("{{ pod_regex }}", {"namespace": "x"}, "{{ pod_regex }} has no value"),
        ("{{ namespace }", None, "unbalanced"),
        ("x}}", None, "unbalanced"),
        ("{{ namespace }}", {"namespace": 'a"} or vector(1) #'}, "quote or backslash"),
        ("{{ window }}", {"window": "30 s"}, "not a PromQL duration"),
    ],
)
def test_render_errors(template: str, variables: dict[str, str] | None, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        render(template, variables if variables is not None else VARS.for_side("canary"))
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("namespace", "target", "window"),
    [("Shop", "checkout", 30), ("shop", 'checkout"', 30), ("shop", "checkout", 0)],
)
def test_template_vars_refuse_bad_input(namespace: str, target: str, window: int) -> None:
    with pytest.raises(TemplateError):
        template_vars(namespace, target, window)


@pytest.mark.parametrize("metric", sorted(DEFAULT_TEMPLATES))
def test_default_templates_render_for_both_sides(metric: str) -> None:
    template = DEFAULT_TEMPLATES[metric]  # type: ignore[index]
    assert is_side_aware(template)
    canary = render(template, VARS.for_side("canary"))
    baseline = render(template, VARS.for_side("baseline"))
    assert 'namespace="shop"' in canary
    assert VARS.canary_pod_regex in canary and VARS.stable_pod_regex not in canary
    assert VARS.stable_pod_regex in baseline and VARS.canary_pod_regex not in baseline
    assert "{{" not in canary and canary.count("(") == canary.count(")")


def test_default_templates_read_documented_series() -> None:
    assert "calyx_tes_score" in DEFAULT_TEMPLATES["tes"]
    assert 'code=~"5.."' in DEFAULT_TEMPLATES["errorRate"]
    assert "or vector(0)" in DEFAULT_TEMPLATES["errorRate"]  # no 5xx series is 0 ‰, not NoData
    assert 'container!=""' in DEFAULT_TEMPLATES["cpu"]
    assert 'resource="cpu"' in DEFAULT_TEMPLATES["cpu"]
    assert 'resource="memory"' in DEFAULT_TEMPLATES["memory"]
    assert "kube_pod_container_resource_limits" in DEFAULT_TEMPLATES["memory"]


def test_is_side_aware() -> None:
    assert is_side_aware('x{pod=~"{{pod_regex}}"}')
    assert not is_side_aware('x{pod=~"{{ canary_pod_regex }}"}')
