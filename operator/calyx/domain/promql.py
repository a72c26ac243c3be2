"""Default PromQL templates and their rendering (docs/analysis.md).

Each metric is evaluated twice per analysis: for the **canary** pods and for the **baseline**
(the stable pods of the target). Rather than keeping two templates per metric, a template is
written once against ``{{ pod_regex }}``, which is bound to the canary pod regex for the canary
query and to the stable pod regex for the baseline query. The other variables of
docs/design.md §Analysis (``namespace``, ``target``, ``canary``, ``canary_pod_regex``,
``stable_pod_regex``, ``window``) are always available too, so an override may address either
side explicitly.

Rendering is deliberately not a template engine: ``{{ name }}`` is replaced for exactly the known
names, anything else that looks like a placeholder is an error naming it, and the substituted
values are validated to be safe inside a double-quoted PromQL string (Kubernetes names cannot
contain quotes or backslashes, but a hand-written Rollout in a test cluster could try). A typo in
an override therefore fails loudly at the first evaluation instead of silently querying nothing,
which would read as NoData and eventually roll back a healthy canary.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from calyx.domain.canary import canary_name

__all__ = [
    "BUILTIN_METRICS",
    "DEFAULT_TEMPLATES",
    "POD_HASH_CHARS",
    "TEMPLATE_VARIABLES",
    "BuiltinMetric",
    "Side",
    "TemplateError",
    "TemplateVars",
    "canary_pod_regex",
    "classify_pod",
    "is_side_aware",
    "render",
    "stable_pod_regex",
    "template_vars",
    "window_text",
]

BuiltinMetric = Literal["tes", "errorRate", "cpu", "memory"]
Side = Literal["canary", "baseline"]

BUILTIN_METRICS: Final[tuple[BuiltinMetric, ...]] = ("tes", "errorRate", "cpu", "memory")

#: Characters of a ReplicaSet ``pod-template-hash`` and of a pod name's random suffix: Kubernetes
#: encodes both with ``rand.SafeEncodeString`` (no vowels, no 0/1/3, so no accidental words). A
#: word such as ``canary`` or ``api`` can therefore never pass for a hash, which is what keeps a
#: target ``checkout`` apart from its canary and from a neighbouring Deployment ``checkout-api``.
POD_HASH_CHARS: Final = "bcdfghjklmnpqrstvwxz2456789"

_HASH: Final = f"[{POD_HASH_CHARS}]{{1,10}}"
_SUFFIX: Final = f"[{POD_HASH_CHARS}]{{5}}"

#: Every name a template may use. ``pod_regex`` (the pods of the side being evaluated) is Calyx's
#: addition to the variables of docs/design.md §Analysis.
TEMPLATE_VARIABLES: Final = (
    "namespace",
    "target",
    "canary",
    "canary_pod_regex",
    "stable_pod_regex",
    "pod_regex",
    "window",
)

_SEL: Final = 'namespace="{{ namespace }}", pod=~"{{ pod_regex }}"'
_CONTAINERS: Final = 'container!="", container!="POD"'

#: Default queries, one number each. Units match the thresholds: TES raw score, error rate in
#: per mille, CPU and memory in percent. See docs/analysis.md for what the application and the
#: cluster must expose.
DEFAULT_TEMPLATES: Final[Mapping[BuiltinMetric, str]] = {
    # The application's quality score, averaged over the side's pods. An instant value, not an
    # average over the window: a drop is visible at the next scrape (promise 3).
    "tes": f"avg(calyx_tes_score{{{_SEL}}})",
    # 5xx share of requests over the window. ``or vector(0)``: an app that never answered 5xx has
    # no such series, which is a perfect score and must not read as NoData. No requests at all
    # (no series, or 0/0 = NaN) stays NoData.
    "errorRate": (
        f'1000 * (sum(rate(http_requests_total{{{_SEL}, code=~"5.."}}[{{{{ window }}}}]))'
        f" or vector(0))"
        f" / sum(rate(http_requests_total{{{_SEL}}}[{{{{ window }}}}]))"
    ),
    # The busiest container's CPU usage as a percentage of its request. ``container!=""`` drops
    # cAdvisor's pod-level cgroup series, ``container!="POD"`` the pause container.
    "cpu": (
        "100 * max("
        f"sum by (namespace, pod, container) "
        f"(rate(container_cpu_usage_seconds_total{{{_SEL}, {_CONTAINERS}}}[{{{{ window }}}}]))"
        " / on (namespace, pod, container) "
        "sum by (namespace, pod, container) "
        f'(kube_pod_container_resource_requests{{{_SEL}, resource="cpu"}}))'
    ),
    # The fullest container's working set as a percentage of its limit: the OOM killer acts per
    # container, so an average over pods would hide the one about to die.
    "memory": (
        "100 * max("
        f"max by (namespace, pod, container) "
        f"(container_memory_working_set_bytes{{{_SEL}, {_CONTAINERS}}})"
        " / on (namespace, pod, container) "
        "max by (namespace, pod, container) "
        f'(kube_pod_container_resource_limits{{{_SEL}, resource="memory"}}))'
    ),
}

_PLACEHOLDER: Final = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_DNS_NAME: Final = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")
_DURATION: Final = re.compile(r"[0-9]+(ms|s|m|h|d|w|y)")
_UNSAFE: Final = re.compile(r'["\\\n\r`]')


class TemplateError(ValueError):
    """A query template cannot be rendered; the message names the template problem."""


@dataclass(frozen=True)
class TemplateVars:
    """The values substituted into a template for one Rollout (both sides)."""

    namespace: str
    target: str
    canary: str
    canary_pod_regex: str
    stable_pod_regex: str
    window: str

    def for_side(self, side: Side) -> dict[str, str]:
        """All variables, with ``pod_regex`` bound to the pods of ``side``."""
        return {
            "namespace": self.namespace,
            "target": self.target,
            "canary": self.canary,
            "canary_pod_regex": self.canary_pod_regex,
            "stable_pod_regex": self.stable_pod_regex,
            "pod_regex": self.canary_pod_regex if side == "canary" else self.stable_pod_regex,
            "window": self.window,
        }


def _regex_name(name: str) -> str:
    """``name`` as a regex matching itself; DNS names only contain ``.`` as a metacharacter.

    ``[.]`` instead of ``\\.`` so that the regex needs no backslashes inside a PromQL string.
    """
    return name.replace(".", "[.]")


def _check_name(kind: str, name: str) -> None:
    if not _DNS_NAME.fullmatch(name):
        raise TemplateError(f"{kind} {name!r} is not a Kubernetes object name")


def canary_pod_regex(target: str) -> str:
    """Regex (RE2, fully anchored as PromQL applies it) for the pods of ``<target>-canary``."""
    _check_name("target", target)
    return f"{_regex_name(canary_name(target))}-{_HASH}-{_SUFFIX}"


def stable_pod_regex(target: str) -> str:
    """Regex for the pods of the Deployment ``target`` itself, excluding its canary.

    Exactly two hash segments follow the name, so ``checkout-canary-<hash>-<sfx>`` (three
    segments, and ``canary`` has vowels) and ``checkout-api-<hash>-<sfx>`` never match.
    """
    _check_name("target", target)
    return f"{_regex_name(target)}-{_HASH}-{_SUFFIX}"


def classify_pod(pod: str, target: str) -> Side | None:
    """Which side of ``target``'s rollout a pod belongs to, or None if it is not one of them.

    The same regexes as the queries, so a batched ``by (pod)`` query (one PromQL for many
    Rollouts) splits its result exactly as the per-Rollout queries would select.
    """
    if re.fullmatch(canary_pod_regex(target), pod):
        return "canary"
    if re.fullmatch(stable_pod_regex(target), pod):
        return "baseline"
    return None


def window_text(seconds: int) -> str:
    """A PromQL duration for ``{{ window }}``, e.g. ``30s``."""
    if seconds < 1:
        raise TemplateError(f"window must be at least 1 second, got {seconds}")
    return f"{seconds}s"


def template_vars(namespace: str, target: str, window_seconds: int) -> TemplateVars:
    """Variables for the Rollout of Deployment ``target`` in ``namespace``."""
    _check_name("namespace", namespace)
    _check_name("target", target)
    return TemplateVars(
        namespace=namespace,
        target=target,
        canary=canary_name(target),
        canary_pod_regex=canary_pod_regex(target),
        stable_pod_regex=stable_pod_regex(target),
        window=window_text(window_seconds),
    )


def is_side_aware(template: str) -> bool:
    """Whether a template selects pods by side (uses ``{{ pod_regex }}``).

    Only such a query has a meaningful baseline; an override that names the canary explicitly is
    evaluated for the canary only.
    """
    return any(m.group(1) == "pod_regex" for m in _PLACEHOLDER.finditer(template))


def render(template: str, variables: Mapping[str, str]) -> str:
    """Substitute ``{{ name }}`` placeholders (spaces optional) with ``variables``.

    Raises :class:`TemplateError` for an unknown or unbound name, or for a value that could break
    out of a PromQL string literal.
    """
    for m in _PLACEHOLDER.finditer(template):
        name = m.group(1)
        if name not in TEMPLATE_VARIABLES:
            known = ", ".join(f"{{{{ {v} }}}}" for v in TEMPLATE_VARIABLES)
            raise TemplateError(f"unknown template variable {{{{ {name} }}}} (known: {known})")
        if name not in variables:
            raise TemplateError(f"template variable {{{{ {name} }}}} has no value here")
    for name, value in variables.items():
        if _UNSAFE.search(value):
            raise TemplateError(f"value of {{{{ {name} }}}} contains a quote or backslash")
    if "window" in variables and not _DURATION.fullmatch(variables["window"]):
        raise TemplateError(f"window {variables['window']!r} is not a PromQL duration")
    rendered = _PLACEHOLDER.sub(lambda m: variables[m.group(1)], template)
    if "{{" in rendered or "}}" in rendered:
        raise TemplateError("unbalanced '{{' or '}}' in query template")
    return rendered
