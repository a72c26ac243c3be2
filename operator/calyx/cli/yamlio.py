"""YAML that reads like the Kubernetes API server reads it.

PyYAML turns an unquoted ``2026-11-25T18:00:00Z`` into a ``datetime``; kubectl sends it as the
string it is. A signature over the wrong type would never verify after ``kubectl apply``, so
the timestamp resolver is removed and such scalars stay strings, exactly as the server stores
them.
"""

from __future__ import annotations

from typing import Any

import yaml


class KubeSafeLoader(yaml.SafeLoader):
    pass


KubeSafeLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_all(text: str) -> list[Any]:
    return [d for d in yaml.load_all(text, Loader=KubeSafeLoader) if d is not None]


def dump(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True, default_flow_style=False)
