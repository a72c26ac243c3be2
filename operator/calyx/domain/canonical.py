"""Canonical JSON bytes for everything Calyx hashes or signs (docs/signing.md §2).

Signatures are made by pipelines in other languages and verified here, so the byte form must be
unambiguous and reproducible anywhere: keys sorted, no whitespace, UTF-8 with non-ASCII characters
left unescaped. We *refuse* rather than coerce anything whose byte form is not portable:

* floats (``1.0`` vs ``1`` vs ``1e0`` differ across languages, and NaN is not JSON at all);
* integers outside the IEEE-754 safe range (``|n| > 2**53 - 1``), which JavaScript and RFC 8785
  (JCS) implementations would round;
* non-string object keys, lone surrogates (not encodable as UTF-8) and any other Python type
  (a ``datetime`` from an eager YAML loader must not be silently stringified one way here and
  another way in the signer's pipeline).

For the documents that pass these checks the output equals JCS, except for the order of object
keys that mix astral-plane characters with U+E000..U+FFFF (JCS sorts by UTF-16 code unit, we sort
by code point like Go's ``encoding/json``); Calyx keys are ASCII field names, so this never arises.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

__all__ = ["MAX_SAFE_INTEGER", "CanonicalError", "canonical_json"]

MAX_SAFE_INTEGER = 2**53 - 1
"""Largest integer every JSON implementation (including JavaScript's) represents exactly."""

_MAX_DEPTH = 64
"""Signed documents are shallow; a deep one is an attack on the recursion limit, not a lease."""


class CanonicalError(ValueError):
    """The value has no canonical form; the message names the offending path (``spec.a[2]``)."""


def canonical_json(obj: object, *, root: str = "$") -> bytes:
    """Return the canonical UTF-8 JSON bytes of ``obj`` or raise :class:`CanonicalError`.

    ``obj`` may contain ``dict``/``Mapping`` (string keys), ``list``/``tuple``, ``str``, ``int``,
    ``bool`` and ``None``. The whole tree is validated first so that the error names the exact
    path, which ends up in a Lease condition an SRE reads; ``root`` names the top of that path
    (``canonical_json(spec, root="spec")`` reports ``spec.constraints.x``).
    """
    plain = _normalise(obj, root, 0)
    try:
        text = json.dumps(
            plain,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
        return text.encode("utf-8")
    except (ValueError, TypeError) as exc:  # pragma: no cover - _normalise rejects these first
        raise CanonicalError(f"cannot canonicalise: {exc}") from exc


def _normalise(obj: object, path: str, depth: int) -> object:
    """Validate ``obj`` recursively and return it with Mappings/tuples turned into dicts/lists."""
    if depth > _MAX_DEPTH:
        raise CanonicalError(f"{path}: nested deeper than {_MAX_DEPTH} levels")
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, str):
        _check_str(obj, path)
        return obj
    if isinstance(obj, int):
        if abs(obj) > MAX_SAFE_INTEGER:
            raise CanonicalError(
                f"{path}: integer {obj} is outside the portable range ±(2**53-1); use a string"
            )
        return int(obj)
    if isinstance(obj, float):
        raise CanonicalError(
            f"{path}: float {obj!r} is not allowed in signed documents; use an integer or a string"
        )
    if isinstance(obj, Mapping):
        out: dict[str, object] = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise CanonicalError(f"{path}: object key {key!r} is not a string")
            _check_str(key, f"{path} key")
            out[key] = _normalise(value, f"{path}.{key}", depth + 1)
        return out
    if isinstance(obj, list | tuple):
        return [_normalise(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj)]
    raise CanonicalError(
        f"{path}: {type(obj).__name__} is not a JSON type "
        "(only strings, integers, booleans, null, objects and arrays can be signed)"
    )


def _check_str(s: str, path: str) -> None:
    """Reject strings UTF-8 cannot encode (lone surrogates), which would have no byte form."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalError(f"{path}: string is not valid Unicode ({exc.reason})") from exc
