"""Sample workloads for tests and ``calyx demo``: one place that says what they look like."""

from __future__ import annotations

from typing import Any


def sample_deployment(namespace: str, name: str, replicas: int, image: str) -> dict[str, Any]:
    """A Deployment the way a team would write it: labels ``app=<name>``, one container ``app``
    with requests and a memory limit, a surge-only rolling update.

    The requests are token-sized on purpose: the fake (kwok) nodes schedule by them, and the
    scale benchmark runs over a thousand of these pods (200m each once left canaries Pending).
    """
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": image,
                            "resources": {
                                "requests": {"cpu": "10m", "memory": "32Mi"},
                                "limits": {"memory": "256Mi"},
                            },
                        }
                    ]
                },
            },
        },
    }
