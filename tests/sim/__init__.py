"""Traffic simulator for analysis tests: per-pod app, cAdvisor and kube-state-metrics series.

See :mod:`tests.sim.server`; ``python -m tests.sim --port 9100`` runs it standalone.
"""

from tests.sim.server import PodInfo, Profile, TrafficSim, pod_name

__all__ = ["PodInfo", "Profile", "TrafficSim", "pod_name"]
