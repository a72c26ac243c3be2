"""The audit chain and the deployment report (docs/report.md, docs/audit.md), written as
decisions happen.

Each Event a pass announces becomes one hash-chained record, printed to stdout (the copy that
lives outside the cluster) and appended to ConfigMap ``<rollout>-report`` together with a fresh
``report.json`` / ``report.md``. The ConfigMap write is a compare-and-swap, so two writers can
never fork the chain.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from calyx.adapters.audit_log import write_record
from calyx.adapters.kube import is_conflict
from calyx.adapters.kube_api import KubeApi
from calyx.domain import audit
from calyx.domain.outbox import audit_record, recorded_ids
from calyx.domain.report import (
    AUDIT_KEY,
    build_report,
    configmap_body,
    configmap_data,
    configmap_name,
)


def write_report(
    kube: KubeApi,
    rollout: Mapping[str, Any],
    lease: Mapping[str, Any] | None,
    entries: Sequence[Mapping[str, Any]],
    now: dt.datetime,
    out: Any = None,
) -> None:
    """Append one record per outbox entry not yet in the chain (and the Lease's story first)
    and rewrite the report; idempotent, so a pass repeated after a crash adds nothing twice."""
    meta = rollout["metadata"]
    ns, name = meta["namespace"], configmap_name(meta["name"])
    stream = out or sys.stdout
    for _ in range(10):
        cm = kube.get_configmap(ns, name)
        chain = audit.parse_jsonl(((cm or {}).get("data") or {}).get(AUDIT_KEY) or "")
        new: list[dict[str, Any]] = []
        if lease is not None and (lease.get("status") or {}).get("phase") in (
            "Verified",
            "Consumed",
        ):
            new += audit.lease_records(chain, lease=lease, time=now)
        done = recorded_ids(chain)
        for ev in entries:
            if ev["id"] in done:  # recorded by a pass that died before clearing the outbox
                continue
            new.append(audit_record(chain + new, ev, rollout))
        chain = chain + new
        report_json, report_md = build_report(rollout=rollout, lease=lease, chain=chain, now=now)
        body = configmap_body(rollout, configmap_data(report_json, report_md, chain))
        try:
            if cm is None:
                kube.create_configmap(ns, body)
            else:
                body["metadata"]["resourceVersion"] = cm["metadata"]["resourceVersion"]
                kube.replace_configmap(ns, name, body)
        except Exception as exc:
            if is_conflict(exc):
                continue
            raise
        for rec in new:
            write_record(rec, stream)
        return
    raise RuntimeError(f"report {ns}/{name} kept changing; will retry on the next pass")
