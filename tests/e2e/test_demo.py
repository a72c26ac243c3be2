"""``calyx demo`` end to end (GitHub issue 7 item 4): the README's first command.

The demo starts its own control plane, Prometheus, traffic simulator and operator, plays a
rollout to 100 % and a breached one rolled back, and must leave nothing running. It is called
in-process (``run_demo``), exactly what ``calyx demo`` runs.
"""

from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

import pytest

from calyx_dev import build as _build
from calyx_dev.demo import run_demo


def _processes_mentioning(needles: list[str]) -> list[str]:
    """Live (non-zombie) processes whose command line or environment contains a needle."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            if stat.rsplit(")", 1)[-1].split()[0] == "Z":
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours
            continue
        if any(n in cmdline or n in environ for n in needles):
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


@pytest.mark.e2e
@pytest.mark.prometheus
@pytest.mark.slow
def test_demo_plays_both_scenarios_and_leaves_nothing_running() -> None:
    if os.environ.get("CALYX_TEST_CLUSTER", "local").strip().lower() == "external":
        pytest.skip("the demo always runs its own local control plane")
    build = os.environ.get("CALYX_TEST_BUILD", "1") != "0"
    out = io.StringIO()
    t0 = time.monotonic()
    code = run_demo(build=build, stream=out)
    elapsed = time.monotonic() - t0
    text = out.getvalue()
    print(text)  # shown by pytest on failure (and with -s)
    assert code == 0, text[-3000:]

    # both outcomes, as the user sees them
    assert "$ calyx sign-lease checkout-2-3-1 -n shop --key alice.key --signer alice" in text
    assert "--signer sentinel --role agent" in text
    assert re.search(r"checkout-2-3-1\s+Verified\s+checkout", text), "kubectl get clease row"
    assert re.search(r"alice\s+human\s+\S+\s+yes", text) and re.search(
        r"sentinel\s+agent\s+\S+\s+yes", text
    )
    assert "sign-lease -f checkout-2-4-0-lease.yaml" in text  # the pre-signed (GitOps) flow
    assert re.search(r"checkout-2-3-1\s+Completed\s+100\s+100", text)
    assert "=> Completed: shop/checkout runs registry.example/checkout:2.3.1 on 10/10 pods" in text
    assert re.search(r"checkout-2-4-0\s+RolledBack", text)
    assert "ThresholdBreached" in text and "RollbackComplete" in text
    m = re.search(r"rollback timings: detectSeconds=([\d.]+) .*revertSeconds=([\d.]+)", text)
    assert m, "the rollback timings line"
    detect, revert = float(m.group(1)), float(m.group(2))
    assert detect < 2 + 10 / 2 + 2 + 2  # interval + window/2 + scrape slack + failureLimit
    assert revert < 1  # docs/design.md promise 3: revert issued < 1 s after the decision
    assert "stable shop/checkout back on registry.example/checkout:2.3.1 (10/10 ready)" in text
    assert text.count("audit chain ok:") == 2
    assert "audit chain BROKEN" not in text
    assert re.search(r"all \d+ processes gone, temp dirs removed", text)
    assert re.search(r"calyx demo: OK in \d+s total - A Completed, B RolledBack", text)
    assert elapsed < 300, f"demo took {elapsed:.0f}s (about 40 s on an idle 2-core machine)"

    # nothing left: no process mentions the demo's work dir or the cluster's data dir
    workdir = re.search(r"temp dir (/\S+calyx-demo-\w+)\)", text)
    cluster_dir = re.search(r"KUBECONFIG=(/\S+calyx-cluster-\w+)/admin\.kubeconfig", text)
    assert workdir and cluster_dir, "the demo prints where it runs"
    needles = [workdir.group(1), cluster_dir.group(1)]
    assert _processes_mentioning(needles) == []
    assert not any(Path(n).exists() for n in needles)


def test_missing_prometheus_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CALYX_PROMETHEUS", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no prometheus (nor anything else) on PATH
    out = io.StringIO()
    assert run_demo(stream=out) == 1
    errors = [ln for ln in out.getvalue().splitlines() if ln.startswith("error:")]
    assert len(errors) == 1
    assert "apt-get install prometheus" in errors[0] and "make system-deps" in errors[0]
    assert not list(tmp_path.iterdir())


def test_no_build_refuses_to_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if not Path("/usr/bin/prometheus").exists() and not os.environ.get("CALYX_PROMETHEUS"):
        monkeypatch.setenv("CALYX_PROMETHEUS", "/bin/true")  # only its presence is checked
    monkeypatch.setenv("CALYX_CACHE", str(tmp_path / "cache"))  # nothing built there
    assert not _build.is_built()
    out = io.StringIO()
    assert run_demo(build=False, stream=out) == 1
    text = out.getvalue()
    assert "error: the control-plane binaries are not built" in text
    assert "make cluster-binaries" in text and "6-7 min" in text
    assert not (tmp_path / "cache").exists()
