"""Canonical JSON (docs/signing.md §2) and the time formats that feed signed statements."""

from __future__ import annotations

import json
from collections import OrderedDict
from datetime import UTC, datetime, timedelta, timezone

import pytest

from calyx.domain.canonical import CanonicalError, canonical_json
from calyx.domain.timefmt import format_time, parse_signed_at, parse_time


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"b": 1, "a": [True, False, None]}, b'{"a":[true,false,null],"b":1}'),
        ({"z": {"y": 1, "x": 2}}, b'{"z":{"x":2,"y":1}}'),
        ({"k": "café €"}, '{"k":"café €"}'.encode()),
        ({"k": "\U0001f600"}, '{"k":"\U0001f600"}'.encode()),
        ({"k": 'q"\\\n\t\x01'}, b'{"k":"q\\"\\\\\\n\\t\\u0001"}'),
        ({"k": "\u2028</script>"}, '{"k":"\u2028</script>"}'.encode()),
        (OrderedDict([("b", 1), ("a", 2)]), b'{"a":2,"b":1}'),
        ((1, 2), b"[1,2]"),
        ({"n": -(2**53 - 1)}, b'{"n":-9007199254740991}'),
        ({"B": 1, "a": 2, "_": 3}, b'{"B":1,"_":3,"a":2}'),
        ("", b'""'),
    ],
    ids=[
        "sorted-keys-literals",
        "nested-sort",
        "non-ascii-unescaped",
        "astral-unescaped",
        "control-escapes",
        "no-html-or-u2028-escaping",
        "mapping-type",
        "tuple-as-array",
        "min-safe-int",
        "code-point-order",
        "bare-string",
    ],
)
def test_canonical_bytes(obj: object, expected: bytes) -> None:
    assert canonical_json(obj) == expected


def test_bool_is_not_an_int() -> None:
    assert canonical_json({"a": True, "b": 1}) == b'{"a":true,"b":1}'


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (
            {"a": 1.0},
            "$.a: float 1.0 is not allowed in signed documents; use an integer or a string",
        ),
        ({"a": [{"b": 0.5}]}, "$.a[0].b: float 0.5 is not allowed"),
        ({"a": float("nan")}, "$.a: float nan is not allowed"),
        ({"a": float("inf")}, "$.a: float inf is not allowed"),
        ({1: "x"}, "$: object key 1 is not a string"),
        ({"a": 2**53}, "$.a: integer 9007199254740992 is outside the portable range"),
        ({"a": datetime(2026, 1, 1)}, "$.a: datetime is not a JSON type"),
        ({"a": b"bytes"}, "$.a: bytes is not a JSON type"),
        ({"a": {1, 2}}, "$.a: set is not a JSON type"),
        ({"a": "\ud800"}, "$.a: string is not valid Unicode"),
        ({"\udfff": 1}, "$ key: string is not valid Unicode"),
    ],
    ids=[
        "float",
        "nested-float",
        "nan",
        "inf",
        "int-key",
        "unsafe-int",
        "datetime",
        "bytes",
        "set",
        "lone-surrogate",
        "surrogate-key",
    ],
)
def test_canonical_refuses(obj: object, message: str) -> None:
    with pytest.raises(CanonicalError) as info:
        canonical_json(obj)
    assert str(info.value).startswith(message)
    assert isinstance(info.value, ValueError)


def test_root_names_the_path() -> None:
    with pytest.raises(CanonicalError, match=r"^spec\.x: float"):
        canonical_json({"x": 1.5}, root="spec")


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    obj: object = "leaf"
    for _ in range(1000):
        obj = [obj]
    with pytest.raises(CanonicalError, match="nested deeper than 64"):
        canonical_json(obj)


def test_matches_the_design_one_liner() -> None:
    obj = {"ns": "shop", "spec": {"é": ["ü", 1, True, None, {"b": "", "a": -3}]}}
    expected = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(obj) == expected.encode("utf-8")


# --------------------------------------------------------------------------- time formats


@pytest.mark.parametrize(
    ("dt", "text"),
    [
        (datetime(2026, 11, 25, 18, 0, 0, tzinfo=UTC), "2026-11-25T18:00:00Z"),
        (datetime(2026, 11, 25, 18, 0, 0, 999_999, tzinfo=UTC), "2026-11-25T18:00:00Z"),
        (
            datetime(2026, 11, 25, 19, 0, tzinfo=timezone(timedelta(hours=1))),
            "2026-11-25T18:00:00Z",
        ),
    ],
    ids=["utc", "drops-fraction", "converts-offset"],
)
def test_format_time(dt: datetime, text: str) -> None:
    assert format_time(dt) == text


def test_format_time_refuses_naive() -> None:
    with pytest.raises(ValueError, match="naive"):
        format_time(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-25T18:00:00Z", datetime(2026, 11, 25, 18, tzinfo=UTC)),
        ("2026-11-25T18:00:00+00:00", datetime(2026, 11, 25, 18, tzinfo=UTC)),
        ("2026-11-25t18:00:00z", datetime(2026, 11, 25, 18, tzinfo=UTC)),
        ("2026-11-25T20:30:00+02:30", datetime(2026, 11, 25, 18, tzinfo=UTC)),
        ("2026-11-25T17:00:00-01:00", datetime(2026, 11, 25, 18, tzinfo=UTC)),
        ("2026-11-25T18:00:00.123456789Z", datetime(2026, 11, 25, 18, 0, 0, 123456, tzinfo=UTC)),
    ],
    ids=["Z", "+00:00", "lowercase", "positive-offset", "negative-offset", "nanoseconds"],
)
def test_parse_time(text: str, expected: datetime) -> None:
    parsed = parse_time(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2026-13-01", "expiresAt '2026-13-01' is not an RFC 3339 time (expected e.g. "),
        ("2026-11-25T18:00:00", "expiresAt '2026-11-25T18:00:00' is not an RFC 3339 time"),
        ("2026-11-25 18:00:00Z", "expiresAt '2026-11-25 18:00:00Z' is not an RFC 3339 time"),
        (
            "2026-02-30T00:00:00Z",
            "is not an RFC 3339 time (expected e.g. 2026-11-25T18:00:00Z): day",
        ),
        ("2026-11-25T24:00:00Z", "hour must be in 0..23"),
        ("2026-11-25T23:59:60Z", "second must be in 0..59"),
        ("2026-11-25T18:00:00+24:00", "offset out of range"),
        ("\uff12\uff10\uff12\uff16-11-25T18:00:00Z", "is not an RFC 3339 time"),
        (1795000000, "expiresAt must be an RFC 3339 string such as 2026-11-25T18:00:00Z, got int"),
    ],
    ids=[
        "date-only",
        "no-offset",
        "space",
        "feb-30",
        "hour-24",
        "leap-second",
        "offset-24h",
        "fullwidth-digits",
        "integer",
    ],
)
def test_parse_time_errors(value: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_time(value, field="expiresAt")
    assert message in str(info.value)


def test_parse_signed_at() -> None:
    assert parse_signed_at("2026-11-25T09:30:00Z") == datetime(2026, 11, 25, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-25T09:30:00+00:00",
        "2026-11-25T09:30:00.0Z",
        "2026-11-25t09:30:00z",
        "2026-11-25T09:30Z",
        " 2026-11-25T09:30:00Z",
        "2026-11-25T09:30:00Z\n",
    ],
)
def test_parse_signed_at_accepts_exactly_one_spelling(value: str) -> None:
    with pytest.raises(ValueError, match=r"must be exactly YYYY-MM-DDTHH:MM:SSZ"):
        parse_signed_at(value)


def test_parse_signed_at_impossible_date() -> None:
    with pytest.raises(ValueError, match="is not a valid date"):
        parse_signed_at("2026-02-30T00:00:00Z")
