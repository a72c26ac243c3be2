"""What the operator registers with Kopf (calyx/handlers/operator.py): only handlers that never
read Kopf's diff base, since ``NoDiffBase`` stops Kopf from building one per watch event."""

from __future__ import annotations

import kopf

from calyx.handlers import operator


def test_only_event_handlers_so_no_diff_base_is_needed() -> None:
    registry = kopf.get_default_registry()
    assert registry._watching.get_all_handlers(), "the on.event handlers are registered"
    assert not registry._changing.get_all_handlers(), (
        "an on.create/on.update/on.resume/on.delete handler reads Kopf's diff base, which "
        "NoDiffBase leaves empty: give it a real DiffBaseStorage again"
    )
    assert not registry._spawning.get_all_handlers(), "timers and daemons need it too"
    assert not registry._indexing.get_all_handlers()


def test_no_diff_base_copies_nothing() -> None:
    body = kopf.Body({"metadata": {"name": "r"}, "spec": {"x": [1] * 1000}, "status": {}})
    storage = operator.NoDiffBase()
    assert storage.build(body=body) == {} and storage.fetch(body=body) is None
