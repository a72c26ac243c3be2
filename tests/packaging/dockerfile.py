"""A small Dockerfile reader for the packaging tests (no Docker engine runs here).

Handles what our Dockerfile uses: comments, parser directives, ``\\`` line continuations,
``ARG`` defaults substituted into ``FROM``, stages, and exec-form (JSON) ``ENTRYPOINT``/``CMD``.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str  # upper case
    args: str  # the rest of the (joined) line
    line: int  # 1-based line of the instruction's first line


@dataclass
class Stage:
    base: str  # image reference after ARG substitution
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """ENV key=value pairs of this stage, in order (later ones win)."""
        out: dict[str, str] = {}
        for ins in self.all("ENV"):
            for token in shlex.split(ins.args):
                key, sep, value = token.partition("=")
                if not sep:
                    raise ValueError(f"line {ins.line}: use ENV key=value, not the legacy form")
                out[key] = value
        return out

    def exec_form(self, keyword: str) -> list[str] | None:
        """The last ENTRYPOINT/CMD of this stage as a list; shell form is an error."""
        found = self.all(keyword)
        if not found:
            return None
        ins = found[-1]
        try:
            value = json.loads(ins.args)
        except json.JSONDecodeError:
            raise ValueError(
                f"line {ins.line}: {keyword} must be exec form (a JSON array), got {ins.args!r}"
            ) from None
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ValueError(f"line {ins.line}: {keyword} must be a JSON array of strings")
        return value


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def _logical_lines(text: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue  # blank, comment or parser directive
        if buf and stripped.startswith("#"):
            continue  # comments inside a continuation are dropped, like Docker does
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].rstrip())
            continue
        buf.append(stripped)
        out.append((start, " ".join(b for b in buf if b)))
        buf = []
    if buf:
        out.append((start, " ".join(buf)))
    return out


def _substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), value
    )


def parse(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line, text in _logical_lines(path.read_text()):
        keyword, _, rest = text.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            global_args[name.strip()] = default.strip().strip('"')
            continue
        if keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            base = _substitute(words[0], global_args)
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
            continue
        if not stages:
            raise ValueError(f"line {line}: {keyword} before the first FROM")
        stages[-1].instructions.append(Instruction(keyword, rest, line))
    return Dockerfile(global_args, stages)
