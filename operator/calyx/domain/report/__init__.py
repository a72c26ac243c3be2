"""The rollout report: ``report.json``, ``report.md`` and ``audit.jsonl`` (docs/report.md,
docs/audit.md).

Every Rollout gets ConfigMap ``<rollout>-report``, in three steps, one module each:

* :mod:`~calyx.domain.report.build` -- ``report.json`` from the Rollout, its Lease and the audit
  chain (:func:`build_report`);
* :mod:`~calyx.domain.report.markdown` -- ``report.md``, rendered from ``report.json`` alone
  (:func:`render_markdown`), so the CLI can show either from a saved file;
* :mod:`~calyx.domain.report.fit` -- the ConfigMap's ``data`` fitted into its 1 MiB limit
  (:func:`configmap_data`) and the object itself (:func:`configmap_body`).

Pure: the clock is passed in, nothing is read or written here.
"""

from calyx.domain.report.build import MAX_DECISION_MESSAGE, MAX_DECISIONS, MAX_TEXT, build_report
from calyx.domain.report.common import (
    AUDIT_KEY,
    JSON_KEY,
    MAX_AUDIT_BYTES,
    MAX_AUDIT_RECORDS,
    MD_KEY,
    SCHEMA,
)
from calyx.domain.report.fit import (
    CONFIGMAP_LIMIT_BYTES,
    DATA_BUDGET_BYTES,
    configmap_body,
    configmap_data,
    configmap_name,
)
from calyx.domain.report.markdown import render_markdown

__all__ = [
    "AUDIT_KEY",
    "CONFIGMAP_LIMIT_BYTES",
    "DATA_BUDGET_BYTES",
    "JSON_KEY",
    "MAX_AUDIT_BYTES",
    "MAX_AUDIT_RECORDS",
    "MAX_DECISIONS",
    "MAX_DECISION_MESSAGE",
    "MAX_TEXT",
    "MD_KEY",
    "SCHEMA",
    "build_report",
    "configmap_body",
    "configmap_data",
    "configmap_name",
    "render_markdown",
]
