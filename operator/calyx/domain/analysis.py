"""Canary analysis: one evaluation of the metrics against the thresholds (docs/analysis.md).

Pure: the reconciler queries Prometheus (``calyx.adapters.prometheus``), then hands the outcomes,
the previous state and ``now`` to :func:`evaluate`, which says what the numbers mean and what to
do. Keeping the judgement here makes every rule table-testable and lets the same code explain a
decision in ``status.lastAnalysis``, Events and the report.

The rules, in the words an SRE would use (docs/analysis.md has the long form):

* A metric **breaches** when the canary is past its threshold: TES more than ``maxDropPercent``
  below the baseline; error rate above ``maxPermille``; CPU or memory above ``maxPercent``; a
  custom metric above ``max``. Exactly at the threshold passes.
* A metric has **NoData** when its query returned nothing, several series, NaN/Inf or an error,
  or (TES only) the baseline has no data. NoData is never a pass.
* The evaluation's verdict is Breach if any metric breaches (missing data elsewhere must not mask
  a breach), else NoData if any metric has no data, else Pass.
* ``failureLimit`` is the number of consecutive breaching evaluations **tolerated**: ``onBreach``
  fires when the streak exceeds it (default 1: a single breaching evaluation holds, the second in
  a row rolls back). Only a Pass ends a streak; a NoData evaluation in between neither extends
  nor ends it, because it did not show the canary healthy.
* NoData holds the rollout (never advances); once some metric has been without data for
  ``noData.rollbackAfterSeconds`` (0 = never) the rollout is rolled back, whatever ``onBreach``
  says, because that field is explicitly "roll back after this".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from calyx.api.errors import InvalidSpecError, parse_spec
from calyx.api.rollout import DEFAULT_ON_BREACH, Analysis
from calyx.domain.promql import (
    DEFAULT_TEMPLATES,
    TemplateError,
    TemplateVars,
    is_side_aware,
    render,
)
from calyx.domain.timefmt import format_time_ms, parse_time

__all__ = [
    "GAP_INTERVALS",
    "Action",
    "AnalysisDecision",
    "AnalysisError",
    "AnalysisSettings",
    "AnalysisState",
    "MetricKind",
    "MetricQueries",
    "MetricResult",
    "MetricSamples",
    "MetricSpec",
    "OutcomeKind",
    "QueryOutcome",
    "Verdict",
    "breaches",
    "estimate_breach_start",
    "evaluate",
    "is_gap",
    "parse_analysis",
    "queries_for",
    "settings_from_spec",
    "without_gap",
]

Verdict = Literal["Pass", "Breach", "NoData"]
Action = Literal["none", "hold", "rollback", "pause"]
MetricKind = Literal["tes", "errorRate", "cpu", "memory", "custom"]
OutcomeKind = Literal["value", "empty", "non_scalar", "error"]
OnBreach = Literal["Rollback", "Pause"]

_UNIT: Final[Mapping[MetricKind, str]] = {
    "tes": "",
    "errorRate": "‰",
    "cpu": "%",
    "memory": "%",
    "custom": "",
}


class AnalysisError(ValueError):
    """The analysis spec cannot be evaluated (bad field, bad template); message says which."""


@dataclass(frozen=True)
class QueryOutcome:
    """What one PromQL query produced, as the adapter observed it.

    ``value`` is set only for kind ``value`` and is always finite: the adapter turns NaN/Inf into
    ``empty`` (0/0 means "no traffic in the window", not a number to compare).
    """

    kind: OutcomeKind
    value: float | None = None
    detail: str = ""
    seconds: float = 0.0

    @classmethod
    def of(cls, value: float, detail: str = "") -> QueryOutcome:
        """A successful outcome (handy for tests and callers that computed a value)."""
        return cls("value", float(value), detail)

    @property
    def has_value(self) -> bool:
        return self.kind == "value" and self.value is not None and math.isfinite(self.value)


@dataclass(frozen=True)
class MetricSpec:
    """One configured metric with its defaults applied."""

    name: str
    """``tes``, ``errorRate``, ``cpu``, ``memory``, or the custom metric's name."""
    kind: MetricKind
    limit: int
    """maxDropPercent (tes), maxPermille (errorRate), maxPercent (cpu, memory), max (custom)."""
    query: str | None = None
    """Override template; None means the default template (built-in metrics only)."""

    @property
    def template(self) -> str:
        if self.query is not None:
            return self.query
        if self.kind == "custom":  # pragma: no cover - parse_analysis requires a query
            raise AnalysisError(f"custom metric {self.name!r} has no query")
        return DEFAULT_TEMPLATES[self.kind]

    @property
    def threshold_text(self) -> str:
        """The threshold as written in the spec, e.g. ``max 10‰`` or ``max drop 5%``."""
        if self.kind == "tes":
            return f"max drop {self.limit}%"
        return f"max {self.limit}{_UNIT[self.kind]}"


@dataclass(frozen=True)
class AnalysisSettings:
    """``spec.analysis`` (plus ``spec.onBreach``) with every default applied — by the model
    (``calyx.api.rollout.Analysis``), the one home of each default: built only by
    :func:`settings_from_spec`."""

    interval_seconds: int
    window_seconds: int
    failure_limit: int
    no_data_rollback_after_seconds: int
    on_breach: OnBreach
    prometheus_url: str | None
    metrics: tuple[MetricSpec, ...]


def settings_from_spec(
    analysis: Analysis, on_breach: OnBreach = DEFAULT_ON_BREACH
) -> AnalysisSettings:
    """The settings of a validated ``spec.analysis``: every default is the model's
    (``calyx.api.rollout``, the one home of each), nothing is validated a second time. A
    built-in metric is checked when its key is present, even as ``{}`` (its default threshold
    applies); absent means not checked."""
    metrics: list[MetricSpec] = []
    if analysis.tes is not None:
        metrics.append(MetricSpec("tes", "tes", analysis.tes.max_drop_percent, analysis.tes.query))
    if analysis.error_rate is not None:
        rate = analysis.error_rate
        metrics.append(MetricSpec("errorRate", "errorRate", rate.max_permille, rate.query))
    if analysis.cpu is not None:
        metrics.append(MetricSpec("cpu", "cpu", analysis.cpu.max_percent, analysis.cpu.query))
    if analysis.memory is not None:
        memory = analysis.memory
        metrics.append(MetricSpec("memory", "memory", memory.max_percent, memory.query))
    for custom in analysis.custom or []:
        metrics.append(MetricSpec(custom.name, "custom", custom.max, custom.query))
    return AnalysisSettings(
        interval_seconds=analysis.interval_seconds,
        window_seconds=analysis.window_seconds,
        failure_limit=analysis.failure_limit,
        no_data_rollback_after_seconds=analysis.no_data.rollback_after_seconds,
        on_breach=on_breach,
        prometheus_url=analysis.prometheus_url or None,
        metrics=tuple(metrics),
    )


def parse_analysis(
    analysis: Mapping[str, Any] | Analysis | None, on_breach: str | None = DEFAULT_ON_BREACH
) -> AnalysisSettings:
    """Settings from ``spec.analysis`` as the model, or as a camelCase mapping not yet
    validated (a report reads the Rollout object as stored): the mapping is validated once,
    by the model, and a problem is an :class:`AnalysisError` naming the field."""
    if on_breach not in (None, "Rollback", "Pause"):
        raise AnalysisError(f"onBreach must be Rollback or Pause, got {on_breach!r}")
    if not isinstance(analysis, Analysis):
        try:
            analysis = parse_spec(Analysis, analysis or {}, kind="analysis")
        except InvalidSpecError as exc:
            raise AnalysisError("; ".join(exc.problems).replace("spec.", "analysis.")) from None
    return settings_from_spec(analysis, "Pause" if on_breach == "Pause" else "Rollback")


@dataclass(frozen=True)
class MetricQueries:
    """The rendered PromQL for one metric: canary always, baseline when it means something."""

    metric: MetricSpec
    canary: str
    baseline: str | None


def queries_for(settings: AnalysisSettings, variables: TemplateVars) -> tuple[MetricQueries, ...]:
    """Render every metric's canary and baseline query.

    The baseline is queried for every side-aware template (``{{ pod_regex }}``): TES needs it to
    judge, the others show it next to the canary value for context. A TES override must be
    side-aware, since a TES without a baseline cannot be judged.
    """
    out: list[MetricQueries] = []
    for metric in settings.metrics:
        template = metric.template
        side_aware = is_side_aware(template)
        if metric.kind == "tes" and not side_aware:
            raise AnalysisError(
                "analysis.tes.query must use {{ pod_regex }}: TES is judged against the baseline"
            )
        try:
            canary = render(template, variables.for_side("canary"))
            baseline = render(template, variables.for_side("baseline")) if side_aware else None
        except TemplateError as exc:
            raise AnalysisError(f"{metric.name} query: {exc}") from exc
        out.append(MetricQueries(metric, canary, baseline))
    return tuple(out)


@dataclass(frozen=True)
class MetricSamples:
    """The outcomes of one metric's queries at this evaluation."""

    canary: QueryOutcome
    baseline: QueryOutcome | None = None


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    text = f"{value:.0f}" if abs(value) >= 100 or value == int(value) else f"{value:.3g}"
    return f"{text}{unit}"


def _round(value: float | None) -> int | float | None:
    """Status-friendly number: integers stay integers, others keep 3 decimals."""
    if value is None:
        return None
    r = round(value, 3)
    return int(r) if r == int(r) else r


@dataclass(frozen=True)
class MetricResult:
    """One metric's verdict with the numbers behind it."""

    name: str
    kind: MetricKind
    canary: float | None
    baseline: float | None
    threshold: str
    verdict: Verdict
    detail: str
    """One line for an SRE, e.g. ``errorRate canary 23‰ > max 10‰ (baseline 1‰)``."""

    def to_status(self) -> dict[str, Any]:
        """The entry under ``status.lastAnalysis.values`` / ``status.tiers[].metrics``."""
        out: dict[str, Any] = {"verdict": self.verdict, "threshold": self.threshold}
        if self.canary is not None:
            out["canary"] = _round(self.canary)
        if self.baseline is not None:
            out["baseline"] = _round(self.baseline)
        return out


def breaches(metric: MetricSpec, canary: float, baseline: float | None) -> bool | None:
    """Whether ``canary`` is past the metric's threshold; None when it cannot be judged.

    The single definition of a breach, used both for the evaluation and to find the first
    breaching sample in a range query (:func:`estimate_breach_start`).
    """
    if metric.kind == "tes":
        if baseline is None:
            return None
        return canary < baseline * (1 - metric.limit / 100)
    return canary > metric.limit


def _judge(metric: MetricSpec, samples: MetricSamples | None) -> MetricResult:
    unit = _UNIT[metric.kind]
    name, threshold = metric.name, metric.threshold_text
    if samples is None:
        return MetricResult(
            name, metric.kind, None, None, threshold, "NoData", f"{name}: not queried"
        )
    canary_o, baseline_o = samples.canary, samples.baseline
    canary = canary_o.value if canary_o.has_value else None
    baseline = baseline_o.value if baseline_o is not None and baseline_o.has_value else None
    base_text = f" (baseline {_fmt(baseline, unit)})" if baseline is not None else ""
    if canary is None:
        why = canary_o.detail or canary_o.kind
        return MetricResult(
            name, metric.kind, None, baseline, threshold, "NoData",
            f"{name}: no data for canary ({why})",
        )  # fmt: skip
    if metric.kind == "tes" and baseline is None:
        why = (baseline_o.detail or baseline_o.kind) if baseline_o is not None else "not queried"
        return MetricResult(
            name, metric.kind, canary, None, threshold, "NoData",
            f"tes: no data for baseline ({why}); canary {_fmt(canary)}",
        )  # fmt: skip
    breach = breaches(metric, canary, baseline)
    if metric.kind == "tes":
        assert baseline is not None
        floor = baseline * (1 - metric.limit / 100)
        drop = (baseline - canary) / baseline * 100 if baseline else 0.0
        rel = f"{drop:.1f}% below" if drop >= 0 else f"{-drop:.1f}% above"
        op = "<" if breach else ">="
        detail = (
            f"tes canary {_fmt(canary)} is {rel} baseline {_fmt(baseline)} "
            f"({op} floor {_fmt(floor)}, {threshold})"
        )
    else:
        op = ">" if breach else "<="
        detail = f"{name} canary {_fmt(canary, unit)} {op} {threshold}{base_text}"
    verdict: Verdict = "Breach" if breach else "Pass"
    return MetricResult(name, metric.kind, canary, baseline, threshold, verdict, detail)


def _time(value: datetime | None) -> str | None:
    return None if value is None else format_time_ms(value)


@dataclass(frozen=True)
class AnalysisState:
    """What one evaluation carries to the next (stored in the Rollout's status, crash-safe)."""

    consecutive_breaches: int = 0
    first_breach_at: datetime | None = None
    """Evaluation time of the first breaching evaluation of the current streak."""
    no_data_since: datetime | None = None
    """Evaluation time since which some metric has had no data, continuously."""
    last_pass_at: datetime | None = None
    """Last evaluation with verdict Pass: no breaching sample can be older than this."""

    def to_status(self) -> dict[str, Any]:
        """camelCase, RFC 3339 with milliseconds (sub-second detection times matter)."""
        out: dict[str, Any] = {"consecutiveBreaches": self.consecutive_breaches}
        for key, value in (
            ("firstBreachAt", self.first_breach_at),
            ("noDataSince", self.no_data_since),
            ("lastPassAt", self.last_pass_at),
        ):
            if value is not None:
                out[key] = _time(value)
        return out

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None) -> AnalysisState:
        """Inverse of :meth:`to_status`; tolerant of missing fields (a fresh Rollout)."""
        status = status or {}

        def when(key: str) -> datetime | None:
            value = status.get(key)
            return None if value in (None, "") else parse_time(value, field=key)

        count = status.get("consecutiveBreaches", 0)
        return cls(
            consecutive_breaches=count if isinstance(count, int) and count > 0 else 0,
            first_breach_at=when("firstBreachAt"),
            no_data_since=when("noDataSince"),
            last_pass_at=when("lastPassAt"),
        )


@dataclass(frozen=True)
class AnalysisDecision:
    """The outcome of one evaluation: verdict, per-metric results, next state, what to do."""

    time: datetime
    verdict: Verdict
    action: Action
    results: tuple[MetricResult, ...]
    state: AnalysisState
    reason: str
    """One line: why this action (the breaching metrics' details, or the NoData story)."""
    cause: Literal["breach", "no_data"] | None = None
    """Set when action is rollback or pause: what triggered it."""
    breaching: tuple[str, ...] = field(default=())
    """Names of the metrics that breached at this evaluation."""

    @property
    def first_breach_at(self) -> datetime | None:
        return self.state.first_breach_at

    def to_status(self) -> dict[str, Any]:
        """``status.lastAnalysis``: ``{time, verdict, values: {metric: {...}}}`` plus state."""
        return {
            "time": _time(self.time),
            "verdict": self.verdict,
            "action": self.action,
            "reason": self.reason,
            "values": {r.name: r.to_status() for r in self.results},
            "state": self.state.to_status(),
        }


GAP_INTERVALS: Final = 2
"""A stretch between two evaluations longer than this many intervals is a gap (API server,
Prometheus or operator down or overloaded): it counts neither toward a soak nor toward a NoData
streak (docs/analysis.md, "Soak" and "No data")."""


def is_gap(seconds: float, interval_seconds: int) -> bool:
    """Whether ``seconds`` between two evaluations is an unanalysed gap."""
    return seconds > GAP_INTERVALS * interval_seconds


def without_gap(
    state: AnalysisState, previous_at: datetime | None, sent_at: datetime, interval_seconds: int
) -> AnalysisState:
    """``state`` with an unanalysed gap since the previous evaluation taken out of its NoData
    streak: time in which nobody looked is no evidence that data is missing. Without this, a
    canary whose first evaluation came before its pods had series, and whose next came minutes
    later from an overloaded operator, was rolled back for NoData (docs/performance.md)."""
    if state.no_data_since is None or previous_at is None:
        return state
    gap = (sent_at - previous_at).total_seconds()
    if not is_gap(gap, interval_seconds):
        return state
    return replace(state, no_data_since=min(sent_at, state.no_data_since + timedelta(seconds=gap)))


def evaluate(
    settings: AnalysisSettings,
    samples: Mapping[str, MetricSamples],
    state: AnalysisState,
    now: datetime,
    sent_at: datetime | None = None,
) -> AnalysisDecision:
    """Judge one evaluation's samples (keyed by metric name) and decide the action.

    ``now`` is the evaluation time (aware); ``sent_at`` when its queries were sent (default
    ``now``): a NoData streak starts at the first query left unanswered, not when its timeout
    ran out (docs/analysis.md, "A hung Prometheus"); ``state`` has already had any gap since the
    previous evaluation taken out (:func:`without_gap`). A configured metric missing from
    ``samples`` counts as NoData: the caller failed to query it, which is not evidence of health.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    results = tuple(_judge(m, samples.get(m.name)) for m in settings.metrics)
    breached = tuple(r.name for r in results if r.verdict == "Breach")
    missing = [r for r in results if r.verdict == "NoData"]
    verdict: Verdict = "Breach" if breached else ("NoData" if missing else "Pass")

    if verdict == "Pass":
        new_state = AnalysisState(last_pass_at=now)
        return AnalysisDecision(now, "Pass", "none", results, new_state, _pass_reason(results))

    no_data_since = (state.no_data_since or sent_at or now) if missing else None
    new_state = replace(state, no_data_since=no_data_since)
    if breached:
        new_state = replace(
            new_state,
            consecutive_breaches=state.consecutive_breaches + 1,
            first_breach_at=state.first_breach_at or now,
        )
    details = "; ".join(r.detail for r in results if r.verdict == "Breach")
    count, limit = new_state.consecutive_breaches, settings.failure_limit

    if breached and count > limit:
        action: Action = "pause" if settings.on_breach == "Pause" else "rollback"
        reason = f"{details} — {count} consecutive breaching evaluations (failureLimit {limit})"
        return AnalysisDecision(
            now, verdict, action, results, new_state, reason, "breach", breached
        )

    after = settings.no_data_rollback_after_seconds
    if no_data_since is not None and after > 0 and now - no_data_since >= timedelta(seconds=after):
        lasted = int((now - no_data_since).total_seconds())
        nd = "; ".join(r.detail for r in missing)
        reason = f"no data for {lasted}s (noData.rollbackAfterSeconds {after}): {nd}"
        return AnalysisDecision(
            now, verdict, "rollback", results, new_state, reason, "no_data", breached
        )

    if breached:
        reason = f"{details} — breach {count} of {limit} tolerated, holding"
    else:
        held = int((now - no_data_since).total_seconds()) if no_data_since else 0
        limit_text = f"rollback after {after}s" if after > 0 else "never rolls back for no data"
        nd = "; ".join(r.detail for r in missing)
        reason = f"{nd} — holding (no data for {held}s, {limit_text})"
    return AnalysisDecision(now, verdict, "hold", results, new_state, reason, None, breached)


def _pass_reason(results: Sequence[MetricResult]) -> str:
    if not results:
        return "no metrics configured"
    return "; ".join(r.detail for r in results)


def estimate_breach_start(
    metric: MetricSpec,
    canary: Sequence[tuple[float, float]],
    baseline: Sequence[tuple[float, float]] | None,
    *,
    not_before: datetime | None,
    fallback: datetime,
) -> datetime:
    """When the breach began: the first sample of the final breaching run in a range query.

    The evaluator only sees values at evaluation times, so a breach that started just after an
    evaluation is seen up to one interval later. To report ``breachAt`` honestly the reconciler
    re-runs the breaching metric's queries with ``query_range`` over ``[not_before, detection]``
    at the scrape step; the earliest timestamp from which every point breaches is when the
    breaching sample became queryable. ``canary``/``baseline`` are ``(unix seconds, value)``
    points; TES compares point-wise with the baseline at the same timestamp. Points at or before
    ``not_before`` (the last passing evaluation) are ignored. Without usable points the answer is
    ``fallback`` (the first breaching evaluation), i.e. detection delay then reads as zero and
    the estimate errs on the side of claiming less, never more, than was measured.
    """
    base = dict(baseline or ())
    floor = not_before.timestamp() if not_before is not None else -math.inf
    start: float | None = None
    for ts, value in sorted(canary):
        if ts <= floor or not math.isfinite(value):
            continue
        ref = base.get(ts)
        verdict = breaches(metric, value, ref if ref is not None and math.isfinite(ref) else None)
        if verdict:
            if start is None:
                start = ts
        elif verdict is not None:
            start = None
    if start is None:
        return fallback
    found = datetime.fromtimestamp(start, tz=UTC)
    return min(found, fallback)
