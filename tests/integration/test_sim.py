"""The traffic simulator on its own: exposition format, counters over time, runtime knobs."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from calyx_dev.trafficsim import PodInfo, Profile, TrafficSim, pod_name


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def samples(sim: TrafficSim) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(sim.render()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(sim: TrafficSim, name: str, **labels: str) -> float:
    total = 0.0
    found = False
    for (n, lbls), v in samples(sim).items():
        if n == name and all(dict(lbls).get(k) == x for k, x in labels.items()):
            total += v
            found = True
    assert found, (name, labels)
    return total


def test_counters_integrate_the_profile_over_time() -> None:
    clock = Clock()
    sim = TrafficSim(clock=clock, default_profile=Profile(rps=10, error_ratio=0.1, cpu_cores=0.5))
    pod = pod_name("checkout")
    sim.set_pods([PodInfo(pod, "shop", "img:1")])
    assert value(sim, "http_requests_total", pod=pod) == 0
    clock.now += 10
    assert value(sim, "http_requests_total", pod=pod, code="500") == pytest.approx(10)
    assert value(sim, "http_requests_total", pod=pod, code="200") == pytest.approx(90)
    assert value(sim, "container_cpu_usage_seconds_total", pod=pod, container="app") == 5
    # A knob change applies from that instant: the 10 s before keep the old ratio.
    clock.now += 10
    sim.set_profile("img:1", error_ratio=0.5)
    clock.now += 10
    assert value(sim, "http_requests_total", pod=pod, code="500") == pytest.approx(10 + 10 + 50)


def test_exposition_has_every_default_series() -> None:
    sim = TrafficSim(clock=Clock())
    sim.set_pods([PodInfo("checkout-bcd2f-x2k4z", "shop", "img:1", container="web")])
    names = {name for name, _ in samples(sim)}
    assert names >= {
        "http_requests_total",
        "calyx_tes_score",
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "kube_pod_container_resource_requests",
        "kube_pod_container_resource_limits",
    }
    ws = value(sim, "container_memory_working_set_bytes", container="web")
    assert ws == 64 * 2**20
    limits = value(sim, "kube_pod_container_resource_limits", resource="memory", unit="byte")
    assert limits == 256 * 2**20


def test_pods_from_a_source_and_tes_switch() -> None:
    sim = TrafficSim(clock=Clock())
    sim.set_pods_source(lambda: [PodInfo("a-bcd2f-x2k4z", "ns", "img:2")])
    sim.set_profile("img:2", tes_exposed=False)
    names = {name for name, _ in samples(sim)}
    assert "http_requests_total" in names and "calyx_tes_score" not in names
    with pytest.raises(ValueError, match="error_ratio"):
        sim.set_profile("img:2", error_ratio=1.5)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_exposition() -> None:
    sim = TrafficSim(clock=Clock())
    sim.set_pods([PodInfo(pod_name("checkout"), "shop", "img:1")])
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=sim.render(), capture_output=True, text=True
    )
    # promtool lints naming (e.g. missing HELP); only a parse error fails the exit code badly.
    assert "error while linting" not in check.stderr + check.stdout


def test_http_api() -> None:
    with TrafficSim() as sim:
        pods = [{"name": "web-bcd2f-x2k4z", "namespace": "ns", "image": "registry/web:1"}]
        req = urllib.request.Request(f"{sim.url}/pods", data=json.dumps(pods).encode())
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert json.loads(resp.read()) == {"pods": 1}
        body = json.dumps({"image": "registry/web:1", "error_ratio": 0.05, "tes": 92}).encode()
        req = urllib.request.Request(f"{sim.url}/profiles", data=body)
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert json.loads(resp.read())["tes"] == 92
        assert sim.profile("registry/web:1").error_ratio == 0.05
        with urllib.request.urlopen(f"{sim.url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert 'calyx_tes_score{namespace="ns",pod="web-bcd2f-x2k4z"} 92' in text
        bad = urllib.request.Request(f"{sim.url}/profiles", data=b'{"image": "x", "nope": 1}')
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(bad, timeout=5)
        assert info.value.code == 400
