"""Run the simulator standalone, e.g. for a demo Prometheus: ``python -m tests.sim --port 9100``.

Pods and profiles are then set over HTTP::

    curl -XPOST localhost:9100/pods -d '[{"name": "checkout-7d9f8b6c5d-x2k4z",
                                          "namespace": "shop", "image": "checkout:2.3.0"}]'
    curl -XPOST localhost:9100/profiles -d '{"image": "checkout:2.3.1", "error_ratio": 0.05}'
"""

from __future__ import annotations

import argparse
import time

from calyx_dev.trafficsim import TrafficSim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    sim = TrafficSim().start(port=args.port, host=args.host)
    print(f"traffic simulator serving {sim.url}/metrics", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        sim.stop()


if __name__ == "__main__":
    main()
