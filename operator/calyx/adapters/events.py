"""Kubernetes Events: the decision trail an SRE reads with ``kubectl events``.

Events are written with the core/v1 API (what ``kubectl describe`` and ``kubectl events`` show),
synchronously, so a caller knows the Event exists before it records the transition as done.

Outbox entries pass the rate limit first (docs/audit.md, "Rate limits"): a repeatable warning
about user-controlled input is not posted once its object's or namespace's bucket is empty. The
caller has written the entry's audit record already and clears the entry either way.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from kubernetes.client.rest import ApiException

from calyx.adapters.event_limiter import EventLimiter
from calyx.adapters.kube_api import KubeApi
from calyx.domain.outbox import event_name
from calyx.domain.timefmt import format_k8s_time

log = logging.getLogger("calyx.events")
COMPONENT = "calyx-operator"


class EventRecorder:
    """Posts Events about Calyx objects; failures are logged, never fatal (Events are lossy)."""

    def __init__(
        self, kube: KubeApi, instance: str = COMPONENT, limiter: EventLimiter | None = None
    ) -> None:
        """``instance`` is the replica (its leader-election identity), so ``kubectl events``
        shows which replica made each decision. ``limiter``: the rate limits (a fresh one
        with the defaults unless given)."""
        self.kube = kube
        self.instance = instance
        self.limiter = limiter if limiter is not None else EventLimiter()

    def emit_entry(self, obj: Mapping[str, Any], entry: Mapping[str, Any]) -> bool:
        """Post an outbox entry's Event under its fixed name (docs/audit.md, "Outbox"), unless
        the rate limit suppresses it; False when suppressed."""
        if not self.limiter.allow(obj, str(entry["reason"])):
            return False
        name = str((obj.get("metadata") or {}).get("name"))
        self.emit(
            obj,
            str(entry["type"]),
            str(entry["reason"]),
            str(entry["message"]),
            name=event_name(name, entry),
        )
        return True

    def emit(
        self,
        obj: Mapping[str, Any],
        type_: str,
        reason: str,
        message: str,
        name: str | None = None,
    ) -> None:
        """Post one Event. With ``name`` (an outbox entry's), a repeat is refused by the API
        server as AlreadyExists and counts as posted: that is what makes it exactly once."""
        meta = obj.get("metadata", {})
        ns = meta.get("namespace") or "default"
        now = dt.datetime.now(dt.UTC)
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": name or f"{meta.get('name')}.{uuid.uuid4().hex[:16]}",
                "namespace": ns,
            },
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": meta.get("name"),
                "namespace": ns,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance,
            "firstTimestamp": format_k8s_time(now),
            "lastTimestamp": format_k8s_time(now),
            "count": 1,
        }
        log.info("event %s %s/%s %s: %s", type_, ns, meta.get("name"), reason, message)
        try:
            self.kube.create_event(ns, body)
        except ApiException as exc:  # an Event lost must not stop a rollback
            if exc.status == 409 and name:
                return  # posted before a crash; the outbox entry is being replayed
            log.warning("could not post event %s on %s/%s: %s", reason, ns, meta.get("name"), exc)
