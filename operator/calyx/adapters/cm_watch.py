"""Keeps one ConfigMap (the trust store, the ledger) in memory, current through a watch.

The cache is only an accelerator: its content always comes from the cluster, is reloaded on
every (re)connect, and a reader that finds it empty falls back to a direct GET. A server-side
field selector keeps the watch to the one object instead of every ConfigMap in the cluster.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import watch

from calyx.adapters.failure_log import FailureLog
from calyx.adapters.kube import Kube, Obj

log = logging.getLogger("calyx.cm_watch")


class ConfigMapCache:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        on_change: Callable[[Obj | None], None] | None = None,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.on_change = on_change
        self._lock = threading.Lock()
        self._obj: Obj | None = None
        self._loaded = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = FailureLog(log)
        # Counts changes of the content: part of a Rollout's change token (reconcile/quiet.py).
        self.version = 0

    def get(self) -> Obj | None:
        """Current content; a direct GET until the watch has delivered a first state."""
        with self._lock:
            if self._loaded:
                return self._obj
        return self.kube.get_configmap(self.namespace, self.name)

    def _set(self, obj: Obj | None) -> None:
        with self._lock:
            changed = not self._loaded or obj != self._obj
            self._obj, self._loaded = obj, True
            if changed:
                self.version += 1
        if changed and self.on_change is not None:
            try:
                self.on_change(obj)
            except Exception:  # a failing listener must not kill the watch
                log.exception("listener for ConfigMap %s/%s failed", self.namespace, self.name)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        selector = f"metadata.name={self.name}"
        where = f"{self.namespace}/{self.name}"
        while not self._stop.is_set():
            try:
                listing = self.kube.core.list_namespaced_config_map(
                    self.namespace, field_selector=selector
                )
                items = listing.items or []
                self._set(self.kube._plain(items[0]) if items else None)
                w = watch.Watch()
                for ev in w.stream(
                    self.kube.core.list_namespaced_config_map,
                    self.namespace,
                    field_selector=selector,
                    resource_version=listing.metadata.resource_version,
                    timeout_seconds=60,
                ):
                    if self._stop.is_set():
                        w.stop()
                        break
                    obj: Any = ev["object"]
                    self._set(None if ev["type"] == "DELETED" else self.kube._plain(obj))
            except Exception as exc:
                self._failures.failed("watch", f"watch on ConfigMap {where}", exc)
                time.sleep(1)
            else:
                self._failures.ok("watch", f"watch on ConfigMap {where}")
