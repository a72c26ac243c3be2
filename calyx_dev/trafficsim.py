"""A traffic simulator: Prometheus text-format metrics for a set of (simulated) pods.

It stands in for an application plus cAdvisor plus kube-state-metrics, exposing from **one**
endpoint, per pod, exactly the series the default analysis queries read
(``calyx.domain.promql.DEFAULT_TEMPLATES``, docs/analysis.md):

* ``http_requests_total{namespace, pod, code}``                  -- app counter (200 and 500)
* ``calyx_tes_score{namespace, pod}``                            -- app gauge
* ``container_cpu_usage_seconds_total{namespace, pod, container}`` -- cAdvisor counter, plus the
  pod-level cgroup series with ``container=""`` that real cAdvisor also exports (so a query that
  forgets to exclude it double-counts, and the tests notice)
* ``container_memory_working_set_bytes{namespace, pod, container}`` -- cAdvisor gauge (idem)
* ``kube_pod_container_resource_requests{..., resource="cpu", unit="core"}`` and
  ``kube_pod_container_resource_limits{..., resource="memory", unit="byte"}`` -- KSM gauges

Prometheus scrapes it with ``honor_labels: true`` so the ``namespace``/``pod`` labels written here
survive. Behaviour is set per **image** (:class:`Profile`: error ratio, TES, CPU cores, memory),
so "the canary image is bad" is one call, and can change at runtime (Python API or
``POST /profiles``). Counters integrate the profile over time: when a knob changes, every counter
is first advanced to that instant with the old values, so ``rate()`` shows a clean step.

The pod list is either set directly (:meth:`TrafficSim.set_pods`, :meth:`add_pods`) or pulled at
every scrape from a callable (``pods_source``), e.g. the pods of a namespace in the local
Kubernetes control plane.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["PodInfo", "Profile", "TrafficSim", "pod_name"]

_HASH_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def pod_name(deployment: str, rs_hash: str | None = None, suffix: str | None = None) -> str:
    """A realistic pod name ``<deployment>-<rs-hash>-<5 chars>`` (Kubernetes' safe alphabet)."""
    rng = random.Random()
    rs_hash = rs_hash or "".join(rng.choice(_HASH_CHARS) for _ in range(10))
    suffix = suffix or "".join(rng.choice(_HASH_CHARS) for _ in range(5))
    return f"{deployment}-{rs_hash}-{suffix}"


@dataclass(frozen=True)
class PodInfo:
    """One pod as the simulator sees it: where it runs and which image (selects the profile)."""

    name: str
    namespace: str
    image: str
    container: str = "app"


@dataclass(frozen=True)
class Profile:
    """How pods running one image behave."""

    error_ratio: float = 0.0
    """Share of requests answered with 500 (0.05 = 5 % = 50 per mille)."""
    tes: float = 100.0
    """The app's quality score gauge."""
    rps: float = 20.0
    """Requests per second per pod."""
    cpu_cores: float = 0.1
    """CPU usage in cores."""
    cpu_request_cores: float = 0.2
    """kube-state-metrics CPU request."""
    memory_bytes: float = 64 * 2**20
    """Working set."""
    memory_limit_bytes: float = 256 * 2**20
    """kube-state-metrics memory limit."""
    tes_exposed: bool = True
    """False: the app exposes no TES (NoData tests)."""

    def validate(self) -> Profile:
        if not 0.0 <= self.error_ratio <= 1.0:
            raise ValueError(f"error_ratio must be within 0..1, got {self.error_ratio}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "tes" and not isinstance(value, bool) and value < 0:
                raise ValueError(f"{f.name} must not be negative, got {value}")
        return self


@dataclass
class _Counters:
    ok: float = 0.0
    errors: float = 0.0
    cpu_seconds: float = 0.0
    last: float = field(default=0.0)


def _labels(**labels: str) -> str:
    inner = ",".join(
        '{}="{}"'.format(k, v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"))
        for k, v in labels.items()
    )
    return "{" + inner + "}"


class TrafficSim:
    """The simulator; :meth:`start` serves it on ``127.0.0.1`` (port 0 = pick a free one)."""

    def __init__(
        self,
        *,
        pods_source: Callable[[], Iterable[PodInfo]] | None = None,
        default_profile: Profile | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self._pods: dict[tuple[str, str], PodInfo] = {}
        self._pods_source = pods_source
        self._default = (default_profile or Profile()).validate()
        self._profiles: dict[str, Profile] = {}
        self._counters: dict[tuple[str, str], _Counters] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.scrapes = 0

    # ---- configuration -----------------------------------------------------------------------

    def set_pods(self, pods: Iterable[PodInfo]) -> None:
        """Replace the static pod list."""
        with self._lock:
            self._advance()
            self._pods = {(p.namespace, p.name): p for p in pods}

    def add_pods(self, pods: Iterable[PodInfo]) -> None:
        with self._lock:
            self._advance()
            for p in pods:
                self._pods[(p.namespace, p.name)] = p

    def remove_pods(self, names: Iterable[str], namespace: str) -> None:
        with self._lock:
            self._advance()
            for name in names:
                self._pods.pop((namespace, name), None)
                self._counters.pop((namespace, name), None)

    def set_pods_source(self, source: Callable[[], Iterable[PodInfo]] | None) -> None:
        """Pull pods from ``source`` at every scrape (in addition to the static list)."""
        with self._lock:
            self._advance()
            self._pods_source = source

    def set_profile(self, image: str, profile: Profile | None = None, **knobs: Any) -> Profile:
        """Set (or update with ``knobs``) how pods of ``image`` behave, from now on."""
        with self._lock:
            self._advance()
            base = profile or self._profiles.get(image, self._default)
            new = replace(base, **knobs).validate()
            self._profiles[image] = new
            return new

    def profile(self, image: str) -> Profile:
        with self._lock:
            return self._profiles.get(image, self._default)

    def reset(self) -> None:
        """Forget pods, profiles and counters (counters restart from 0, as after a pod restart)."""
        with self._lock:
            self._pods.clear()
            self._profiles.clear()
            self._counters.clear()
            self._pods_source = None

    def pods(self) -> list[PodInfo]:
        """Current pods: the static list plus whatever ``pods_source`` returns."""
        with self._lock:
            pods = dict(self._pods)
            source = self._pods_source
        if source is not None:
            for p in source():
                pods[(p.namespace, p.name)] = p
        return list(pods.values())

    # ---- exposition --------------------------------------------------------------------------

    def _advance(self, pods: Iterable[PodInfo] | None = None) -> None:
        """Integrate every known pod's counters up to now with its current profile."""
        now = self._clock()
        current = list(pods) if pods is not None else list(self._pods.values())
        for p in current:
            key = (p.namespace, p.name)
            c = self._counters.get(key)
            if c is None:
                self._counters[key] = _Counters(last=now)
                continue
            dt = max(0.0, now - c.last)
            prof = self._profiles.get(p.image, self._default)
            requests = prof.rps * dt
            c.errors += requests * prof.error_ratio
            c.ok += requests * (1 - prof.error_ratio)
            c.cpu_seconds += prof.cpu_cores * dt
            c.last = now
        # Pods from a source are advanced at scrape time only; the static ones also on changes.

    def render(self) -> str:
        """The exposition (text format 0.0.4) of every current pod."""
        pods = self.pods()
        with self._lock:
            self._advance(pods)
            self.scrapes += 1
            lines: dict[str, list[str]] = {
                "http_requests_total": [],
                "calyx_tes_score": [],
                "container_cpu_usage_seconds_total": [],
                "container_memory_working_set_bytes": [],
                "kube_pod_container_resource_requests": [],
                "kube_pod_container_resource_limits": [],
            }
            for p in sorted(pods, key=lambda p: (p.namespace, p.name)):
                c = self._counters[(p.namespace, p.name)]
                prof = self._profiles.get(p.image, self._default)
                pod = {"namespace": p.namespace, "pod": p.name}
                ctr = {**pod, "container": p.container}
                lines["http_requests_total"] += [
                    f"http_requests_total{_labels(**pod, code='200')} {c.ok!r}",
                    f"http_requests_total{_labels(**pod, code='500')} {c.errors!r}",
                ]
                if prof.tes_exposed:
                    lines["calyx_tes_score"].append(f"calyx_tes_score{_labels(**pod)} {prof.tes!r}")
                cpu = "container_cpu_usage_seconds_total"
                lines[cpu] += [
                    f"{cpu}{_labels(**ctr, cpu='total')} {c.cpu_seconds!r}",
                    # The pod cgroup (container="") aggregates its containers, as in cAdvisor.
                    f"{cpu}{_labels(**pod, container='', cpu='total')} {c.cpu_seconds * 1.05!r}",
                ]
                mem = "container_memory_working_set_bytes"
                lines[mem] += [
                    f"{mem}{_labels(**ctr)} {prof.memory_bytes!r}",
                    f"{mem}{_labels(**pod, container='')} {prof.memory_bytes * 1.1!r}",
                ]
                lines["kube_pod_container_resource_requests"].append(
                    "kube_pod_container_resource_requests"
                    f"{_labels(**ctr, resource='cpu', unit='core')} {prof.cpu_request_cores!r}"
                )
                lines["kube_pod_container_resource_limits"].append(
                    "kube_pod_container_resource_limits"
                    f"{_labels(**ctr, resource='memory', unit='byte')} "
                    f"{prof.memory_limit_bytes!r}"
                )
        types = {
            "http_requests_total": "counter",
            "container_cpu_usage_seconds_total": "counter",
        }
        out: list[str] = []
        for name, series in lines.items():
            out.append(f"# TYPE {name} {types.get(name, 'gauge')}")
            out.extend(series)
        return "\n".join(out) + "\n"

    # ---- HTTP --------------------------------------------------------------------------------

    def start(self, port: int = 0, host: str = "127.0.0.1") -> TrafficSim:
        """Serve ``GET /metrics``, ``GET|POST /profiles[/<image>]``, ``POST /pods``."""
        if self._server is not None:
            return self
        sim = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _send(self, code: int, body: str, ctype: str = "application/json") -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/metrics":
                    self._send(200, sim.render(), "text/plain; version=0.0.4; charset=utf-8")
                elif self.path == "/profiles":
                    with sim._lock:
                        body = {k: asdict(v) for k, v in sim._profiles.items()}
                    self._send(200, json.dumps(body))
                elif self.path == "/pods":
                    self._send(200, json.dumps([asdict(p) for p in sim.pods()]))
                else:
                    self._send(404, '{"error": "not found"}')

            def do_POST(self) -> None:
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    body = json.loads(self.rfile.read(length) or b"{}")
                    if self.path.startswith("/profiles/"):
                        image = self.path[len("/profiles/") :]
                        prof = sim.set_profile(image, **body)
                        self._send(200, json.dumps(asdict(prof)))
                    elif self.path == "/profiles":
                        # {"image": "...", "error_ratio": ...}: images contain slashes and colons.
                        image = body.pop("image")
                        prof = sim.set_profile(image, **body)
                        self._send(200, json.dumps(asdict(prof)))
                    elif self.path == "/pods":
                        sim.set_pods(PodInfo(**p) for p in body)
                        self._send(200, json.dumps({"pods": len(body)}))
                    else:
                        self._send(404, '{"error": "not found"}')
                except (ValueError, TypeError, KeyError) as exc:
                    self._send(400, json.dumps({"error": str(exc)}))

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="traffic-sim",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("simulator not started")
        return int(self._server.server_address[1])

    @property
    def address(self) -> str:
        """``host:port`` as a Prometheus scrape target."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def __enter__(self) -> TrafficSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def profiles_from_json(data: Mapping[str, Mapping[str, Any]]) -> dict[str, Profile]:
    """``{"image": {knobs}}`` to profiles (for a JSON/YAML-configured standalone simulator)."""
    return {image: Profile(**knobs).validate() for image, knobs in data.items()}
