"""A complete local environment for tests and ``calyx demo``, with no Docker.

* ``build``: kube-apiserver, controller-manager, scheduler, kubectl, etcd and kwok built from
  the Go module proxy, cached under ``~/.cache/calyx/<versions>/``.
* ``controlplane``: starts them on loopback (kwok simulates nodes and kubelets).
* ``prometheus``: the real Prometheus server (Debian package) with a 1 s scrape.
* ``trafficsim``: per-pod application metrics whose behaviour is set per image.
* ``operator_process``: the operator as a killable ``kopf run`` subprocess.

Development tooling, outside the shipped ``calyx`` package: it never reaches the wheel or the
image (a packaging test checks both), and an import-linter contract keeps ``calyx`` from
importing it. ``calyx demo`` loads it from a source checkout (``make demo``).
"""
