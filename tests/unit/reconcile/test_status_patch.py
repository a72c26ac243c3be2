import pytest

from calyx.reconcile.status import status_patch


def apply_merge_patch(target: object, patch: object) -> object:
    """RFC 7386 reference algorithm, to check the patches against."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = apply_merge_patch(result.get(k), v)
    return result


@pytest.mark.parametrize(
    ("prev", "new"),
    [
        ({"a": 1}, {"a": 1}),
        ({"a": 1}, {"a": 2}),
        ({"a": 1, "b": 2}, {"a": 1}),
        ({"s": {"x": 1, "noDataSince": "t"}}, {"s": {"x": 1}}),  # nested removal
        ({"l": {"state": {"a": 1, "b": 2}}}, {"l": {"state": {"a": 1}, "v": 3}}),
        ({"t": [{"a": 1}, {"b": 2}]}, {"t": [{"a": 1}]}),  # lists replaced whole
        ({}, {"a": {"b": {"c": 1}}}),
        ({"a": {"b": 1}}, {"a": 5}),
        ({"a": 5}, {"a": {"b": 1}}),
        ({"a": 1}, {"a": 1, "gone": None}),
    ],
)
def test_patch_turns_prev_into_new(prev: dict, new: dict) -> None:  # type: ignore[type-arg]
    patch = status_patch(prev, new)
    wanted = {k: v for k, v in new.items() if v is not None}
    if prev == wanted:
        assert patch is None
    else:
        assert patch is not None
        assert apply_merge_patch(prev, patch) == wanted


def test_stale_nested_key_is_deleted() -> None:
    prev = {"lastAnalysis": {"state": {"consecutiveBreaches": 0, "noDataSince": "T1"}}}
    new = {"lastAnalysis": {"state": {"consecutiveBreaches": 0, "lastPassAt": "T2"}}}
    assert status_patch(prev, new) == {
        "lastAnalysis": {"state": {"noDataSince": None, "lastPassAt": "T2"}}
    }
