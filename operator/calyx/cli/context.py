"""Cluster access for CLI verbs, built lazily so offline verbs (keygen, sign -f) never need it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from kubernetes import config

from calyx.adapters.kube import Kube, api_client
from calyx.adapters.settings import Settings


@dataclass
class CliContext:
    kubeconfig: str | None = None
    context: str | None = None
    namespace_flag: str | None = None
    operator_namespace: str | None = None
    _kube: Kube | None = field(default=None, init=False)

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            self._kube = Kube(api_client(self.kubeconfig, self.context, user_agent="calyx-cli"))
        return self._kube

    @property
    def namespace(self) -> str:
        """``-n``, else the kubeconfig context's namespace, else ``default`` (like kubectl)."""
        if self.namespace_flag:
            return self.namespace_flag
        try:
            _, active = config.list_kube_config_contexts(config_file=self.kubeconfig)
            if self.context:
                contexts, _ = config.list_kube_config_contexts(config_file=self.kubeconfig)
                active = next((c for c in contexts if c["name"] == self.context), active)
            return str(active.get("context", {}).get("namespace") or "default")
        except (config.ConfigException, FileNotFoundError, TypeError):
            return "default"

    @property
    def settings(self) -> Settings:
        base = Settings.from_env()
        if self.operator_namespace:
            return Settings(**{**base.__dict__, "namespace": self.operator_namespace})
        return base


def env_kubeconfig() -> str | None:
    return os.environ.get("KUBECONFIG") or None
