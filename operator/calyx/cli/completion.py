"""``calyx completion bash|zsh|fish``: shell completion scripts generated from the CLI parser.

The scripts are generated from :func:`calyx.cli.main.build_parser` at the moment they are
printed, so a new verb or flag is completable without anyone editing a script, and they are
static: pressing Tab never starts Python (importing the CLI takes ~0.7 s, the Kubernetes client
most of it), which would make completion feel broken. docs/cli.md, "Shell completion", says how to
install them.

All three share one model: walk the words typed so far, skipping options and the value of each
option that takes one, and descend through the verbs that match (``trust`` → ``add``). Then offer
the option's choices or files after an option that takes a value, the options of the verb when
the word starts with ``-``, else its sub-verbs (or files for a file argument).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["SHELLS", "CommandNode", "command_tree", "completion_script"]

SHELLS = ("bash", "zsh", "fish")

#: Options and positionals whose value is a local file (completed with file names).
FILE_OPTIONS = frozenset({"--key", "-f", "--file", "-o", "--output", "--kubeconfig"})
FILE_POSITIONALS = frozenset({("keygen", "out")})


@dataclass
class Option:
    flags: tuple[str, ...]
    takes_value: bool
    choices: tuple[str, ...] = ()
    files: bool = False


@dataclass
class CommandNode:
    """One verb (or the program itself, ``path == ""``) and what may follow it."""

    path: str
    subcommands: dict[str, CommandNode] = field(default_factory=dict)
    options: list[Option] = field(default_factory=list)
    file_positional: bool = False

    def walk(self) -> Iterator[CommandNode]:
        yield self
        for sub in self.subcommands.values():
            yield from sub.walk()


def command_tree(parser: argparse.ArgumentParser, path: str = "") -> CommandNode:
    """The verbs, options and choices of ``parser``, recursively (hidden options left out)."""
    node = CommandNode(path)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                node.subcommands[name] = command_tree(sub, f"{path} {name}".strip())
            continue
        if action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            node.options.append(
                Option(
                    flags=tuple(action.option_strings),
                    takes_value=action.nargs != 0,
                    choices=tuple(str(c) for c in action.choices or ()),
                    files=bool(FILE_OPTIONS & set(action.option_strings)),
                )
            )
        elif (path, action.dest) in FILE_POSITIONALS:
            node.file_positional = True
    return node


def completion_script(shell: str, parser: argparse.ArgumentParser, version: str) -> str:
    """The completion script for ``shell`` (one of :data:`SHELLS`)."""
    tree = command_tree(parser)
    if shell == "bash":
        return _bash(tree, version)
    if shell == "zsh":
        return _zsh(tree, version)
    if shell == "fish":
        return _fish(tree, version)
    raise ValueError(f"unsupported shell {shell!r}; choose one of {', '.join(SHELLS)}")


# ---------------------------------------------------------------------- shared POSIX-ish tables


def _q(text: str) -> str:
    """Single-quote for sh/zsh/fish (verbs, flags and choices never contain a quote)."""
    assert "'" not in text and "\\" not in text, text
    return f"'{text}'"


def _sh_tables(tree: CommandNode) -> str:
    """Lookup functions, valid in bash and zsh: each prints a space-separated word list."""
    subs, opts, value_opts, values, files, file_pos = [], [], [], [], [], []
    for node in tree.walk():
        key = _q(node.path)
        if node.subcommands:
            subs.append(f"    {key}) echo {_q(' '.join(node.subcommands))} ;;")
        flags = [f for o in node.options for f in o.flags]
        if flags:
            opts.append(f"    {key}) echo {_q(' '.join(flags))} ;;")
        taking = [f for o in node.options if o.takes_value for f in o.flags]
        if taking:
            value_opts.append(f"    {key}) echo {_q(' '.join(taking))} ;;")
        for o in node.options:
            for flag in o.flags:
                k = _q(f"{node.path} {flag}".strip())
                if o.choices:
                    values.append(f"    {k}) echo {_q(' '.join(o.choices))} ;;")
                if o.files:
                    files.append(k)
        if node.file_positional:
            file_pos.append(key)

    def fn(name: str, cases: list[str]) -> str:
        body = "\n".join(cases)
        return f'{name}() {{\n  case "$1" in\n{body}\n  esac\n}}\n'

    def pred(name: str, keys: list[str]) -> str:
        pattern = "|".join(keys) or "''"
        return f'{name}() {{\n  case "$1" in\n    {pattern}) return 0 ;;\n  esac\n  return 1\n}}\n'

    return "\n".join(
        [
            fn("_calyx_subcommands", subs),
            fn("_calyx_options", opts),
            fn("_calyx_value_options", value_opts),
            fn("_calyx_option_values", values),
            pred("_calyx_file_option", files),
            pred("_calyx_file_positional", file_pos),
        ]
    )


# The walk over the words typed so far, in a syntax bash and zsh share. $1.. are the words
# before the one being completed (without the program name); sets _calyx_cmd and _calyx_skip.
_SH_WALK = """\
_calyx_walk() {
  _calyx_cmd=""
  _calyx_skip=0
  local w
  for w in "$@"; do
    if [ "$_calyx_skip" = 1 ]; then _calyx_skip=0; continue; fi
    case "$w" in
      --*=*) continue ;;
      -*)
        case " $(_calyx_value_options "$_calyx_cmd") " in *" $w "*) _calyx_skip=1 ;; esac
        continue ;;
    esac
    case " $(_calyx_subcommands "$_calyx_cmd") " in
      *" $w "*) _calyx_cmd="${_calyx_cmd:+$_calyx_cmd }$w" ;;
    esac
  done
}
"""


def _header(shell: str, version: str, how: str) -> str:
    return (
        f"# {shell} completion for calyx and kubectl-calyx (calyx {version}).\n"
        f"# Generated by `calyx completion {shell}`; regenerate after upgrading calyx.\n"
        f"# {how}\n"
    )


def _bash(tree: CommandNode, version: str) -> str:
    driver = """\
_calyx() {
  local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}" words
  _calyx_walk "${COMP_WORDS[@]:1:COMP_CWORD-1}"
  COMPREPLY=()
  if [ "$_calyx_skip" = 1 ]; then
    words="$(_calyx_option_values "${_calyx_cmd:+$_calyx_cmd }$prev")"
    if [ -n "$words" ]; then
      COMPREPLY=($(compgen -W "$words" -- "$cur"))
    elif _calyx_file_option "${_calyx_cmd:+$_calyx_cmd }$prev"; then
      compopt -o filenames 2>/dev/null
      COMPREPLY=($(compgen -f -- "$cur"))
    fi
    return 0
  fi
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$(_calyx_options "$_calyx_cmd")" -- "$cur"))
    return 0
  fi
  words="$(_calyx_subcommands "$_calyx_cmd")"
  if [ -n "$words" ]; then
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
  elif _calyx_file_positional "$_calyx_cmd"; then
    compopt -o filenames 2>/dev/null
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
  return 0
}
complete -F _calyx calyx kubectl-calyx
"""
    how = (
        "Load: source <(calyx completion bash)   "
        "(or save it as ~/.local/share/bash-completion/completions/calyx)"
    )
    return _header("bash", version, how) + "\n" + _sh_tables(tree) + "\n" + _SH_WALK + "\n" + driver


def _zsh(tree: CommandNode, version: str) -> str:
    # zsh: `path` is special (tied to $PATH), hence the _calyx_ prefixes; ${=x} splits words.
    driver = """\
_calyx() {
  local cur="${words[CURRENT]}" prev="${words[CURRENT-1]}" list
  _calyx_walk "${(@)words[2,CURRENT-1]}"
  if [ "$_calyx_skip" = 1 ]; then
    list="$(_calyx_option_values "${_calyx_cmd:+$_calyx_cmd }$prev")"
    if [ -n "$list" ]; then
      compadd -- ${=list}
    elif _calyx_file_option "${_calyx_cmd:+$_calyx_cmd }$prev"; then
      _files
    fi
    return 0
  fi
  if [[ "$cur" == -* ]]; then
    compadd -- ${=$(_calyx_options "$_calyx_cmd")}
    return 0
  fi
  list="$(_calyx_subcommands "$_calyx_cmd")"
  if [ -n "$list" ]; then
    compadd -- ${=list}
  elif _calyx_file_positional "$_calyx_cmd"; then
    _files
  fi
  return 0
}
if (( $+functions[compdef] )); then compdef _calyx calyx kubectl-calyx; fi
"""
    how = (
        "Load: source <(calyx completion zsh) after compinit, or save it as _calyx in a "
        "directory of $fpath"
    )
    return (
        "#compdef calyx kubectl-calyx\n"
        + _header("zsh", version, how)
        + "\n"
        + _sh_tables(tree)
        + "\n"
        + _SH_WALK
        + "\n"
        + driver
    )


def _fish(tree: CommandNode, version: str) -> str:
    def fn(name: str, cases: list[str]) -> str:
        return f'function {name}\n    switch "$argv[1]"\n' + "\n".join(cases) + "\n    end\nend\n"

    subs, opts, value_opts, values, files, file_pos = [], [], [], [], [], []
    for node in tree.walk():
        key = _q(node.path)
        if node.subcommands:
            subs.append(
                f"        case {key}\n            printf '%s\\n' {' '.join(node.subcommands)}"
            )
        flags = [f for o in node.options for f in o.flags]
        if flags:
            opts.append(f"        case {key}\n            printf '%s\\n' {' '.join(flags)}")
        taking = [f for o in node.options if o.takes_value for f in o.flags]
        if taking:
            value_opts.append(f"        case {key}\n            printf '%s\\n' {' '.join(taking)}")
        for o in node.options:
            for flag in o.flags:
                k = _q(f"{node.path} {flag}".strip())
                if o.choices:
                    values.append(
                        f"        case {k}\n            printf '%s\\n' {' '.join(o.choices)}"
                    )
                if o.files:
                    files.append(k)
        if node.file_positional:
            file_pos.append(key)
    tables = "\n".join(
        [
            fn("__calyx_subcommands", subs),
            fn("__calyx_options", opts),
            fn("__calyx_value_options", value_opts),
            fn("__calyx_option_values", values),
            fn(
                "__calyx_file_option", [f"        case {' '.join(files)}\n            return 0"]
            ).replace("    end\nend", "    end\n    return 1\nend"),
            fn(
                "__calyx_file_positional",
                [f"        case {' '.join(file_pos) or _q('')}\n            return 0"],
            ).replace("    end\nend", "    end\n    return 1\nend"),
        ]
    )
    driver = """\
function __calyx_complete
    set -l tokens (commandline -opc)
    set -e tokens[1]
    set -l cur (commandline -ct)
    set -l cmd ''
    set -l skip 0
    set -l prev ''
    for w in $tokens
        set prev $w
        if test $skip = 1
            set skip 0
            continue
        end
        switch $w
            case '--*=*'
                continue
            case '-*'
                if contains -- $w (__calyx_value_options "$cmd")
                    set skip 1
                end
                continue
        end
        if contains -- $w (__calyx_subcommands "$cmd")
            set cmd (string trim -- "$cmd $w")
        end
    end
    set -l key (string trim -- "$cmd $prev")
    if test $skip = 1
        set -l choices (__calyx_option_values "$key")
        if test (count $choices) -gt 0
            printf '%s\\n' $choices
        else if __calyx_file_option "$key"
            __fish_complete_path "$cur"
        end
        return 0
    end
    if string match -q -- '-*' "$cur"
        __calyx_options "$cmd"
        return 0
    end
    set -l subs (__calyx_subcommands "$cmd")
    if test (count $subs) -gt 0
        printf '%s\\n' $subs
    else if __calyx_file_positional "$cmd"
        __fish_complete_path "$cur"
    end
end
complete -c calyx -f -a '(__calyx_complete)'
complete -c kubectl-calyx -f -a '(__calyx_complete)'
"""
    how = (
        "Load: calyx completion fish | source   "
        "(or save it as ~/.config/fish/completions/calyx.fish)"
    )
    return _header("fish", version, how) + "\n" + tables + "\n" + driver
