"""Traffic simulator for analysis tests: per-pod app, cAdvisor and kube-state-metrics series.

See :mod:`calyx_dev.trafficsim`; ``python -m tests.sim --port 9100`` runs it standalone.
"""

from calyx_dev.trafficsim import PodInfo, Profile, TrafficSim, pod_name

__all__ = ["PodInfo", "Profile", "TrafficSim", "pod_name"]
