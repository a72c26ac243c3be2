"""Turn pydantic validation errors into short messages a Kubernetes user can act on.

The operator puts these messages into a condition and an Event, so they name the field the way
``kubectl explain`` does (``spec.tiers[1].weight``), say what is wrong in plain words, and show
the offending value when it is small.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

M = TypeVar("M", bound=BaseModel)

_FRIENDLY: dict[str, str] = {
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "int_parsing": "must be an integer",
    "bool_type": "must be a boolean (true or false)",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
}


def field_path(loc: tuple[int | str, ...], prefix: str = "") -> str:
    """``("tiers", 1, "weight")`` -> ``"spec.tiers[1].weight"`` (with ``prefix="spec"``)."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(root)"


def _show(value: Any) -> str | None:
    if isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) <= 80):
        return repr(value)
    return None


def describe_error(error: ErrorDetails, prefix: str = "") -> str:
    """One line for one pydantic error: ``<path>: <what is wrong> (got <value>)``."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    msg = _FRIENDLY.get(kind)
    if kind == "too_short" and "min_length" in ctx:
        msg = f"must have at least {ctx['min_length']} item(s)"
    elif kind == "too_long" and "max_length" in ctx:
        msg = f"must have at most {ctx['max_length']} item(s)"
    elif msg is None:
        msg = error["msg"]
        msg = msg.removeprefix("Value error, ")
        msg = msg.replace("Input should be", "must be").replace("String should", "must")
        msg = msg.replace("List should", "must").replace("Value should", "must")
    line = f"{field_path(error['loc'], prefix)}: {msg}"
    if kind not in ("missing", "value_error", "extra_forbidden", "too_short", "too_long"):
        shown = _show(error.get("input"))
        if shown is not None:
            line += f" (got {shown})"
    return line


def describe_validation_error(exc: ValidationError, prefix: str = "") -> list[str]:
    """All errors of ``exc`` as lines, in pydantic's order."""
    return [describe_error(e, prefix) for e in exc.errors()]


class InvalidSpecError(ValueError):
    """A spec that does not validate. ``str(err)`` is one line listing every problem."""

    def __init__(self, kind: str, problems: list[str]) -> None:
        self.kind = kind
        self.problems = problems
        super().__init__(f"invalid {kind}: " + "; ".join(problems))


def parse_spec(model: type[M], raw: Mapping[str, Any] | None, *, kind: str) -> M:
    """Validate a raw ``spec`` dict (as found in a Kubernetes object) into ``model``.

    Raises :class:`InvalidSpecError` whose message names every bad field as ``spec.<path>``.
    """
    if not isinstance(raw, Mapping):
        raise InvalidSpecError(kind, ["spec: must be an object"])
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        raise InvalidSpecError(kind, describe_validation_error(exc, prefix="spec")) from None
