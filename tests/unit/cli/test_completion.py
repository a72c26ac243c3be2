"""``calyx completion bash|zsh|fish``: the scripts are loaded by the real shells and complete.

bash: the script's function is called the way bash's programmable completion calls it
(COMP_WORDS / COMP_CWORD), in a real bash. fish: its own completion engine (``complete -C``).
zsh: a real interactive zsh with compinit in a tmux pane, Tab pressed, the screen read back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from calyx.cli.completion import command_tree, completion_script
from calyx.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[3]


def script(shell: str) -> str:
    return completion_script(shell, build_parser(), "test")


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} not installed (.ci/system-deps.sh installs it)")
    return path


def test_cli_prints_the_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == 0
    out = capsys.readouterr().out
    assert "complete -F _calyx calyx kubectl-calyx" in out
    assert "sign-lease" in out


def test_unknown_shell_is_one_line_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "calyx.cli.main", "completion", "powershell"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr


def test_tree_follows_the_parser() -> None:
    """Every verb of the parser is in the tree, hidden options are not (status --interval)."""
    tree = command_tree(build_parser())
    assert {"sign-lease", "trust", "completion", "status"} <= set(tree.subcommands)
    assert set(tree.subcommands["trust"].subcommands) == {"add", "list", "remove"}
    status_flags = {f for o in tree.subcommands["status"].options for f in o.flags}
    assert "--watch" in status_flags and "--interval" not in status_flags
    role = next(o for o in tree.subcommands["sign-lease"].options if "--role" in o.flags)
    assert role.choices == ("human", "agent") and role.takes_value
    key = next(o for o in tree.subcommands["sign-lease"].options if "--key" in o.flags)
    assert key.files


# ------------------------------------------------------------------------------------- bash


def bash_complete(tmp_path: Path, *words: str) -> list[str]:
    """Complete the last word of ``words`` as bash would (``words[0]`` is the program)."""
    f = tmp_path / "calyx.bash"
    f.write_text(script("bash"))
    arr = " ".join(f"'{w}'" for w in words)
    code = (
        f"source {f}\nCOMP_WORDS=({arr})\nCOMP_CWORD={len(words) - 1}\n"
        '_calyx\nprintf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    proc = subprocess.run(
        [need("bash"), "--norc", "--noprofile", "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert proc.stderr == "", proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (("calyx", "sig"), ["sign-lease"]),
        (("kubectl-calyx", "sig"), ["sign-lease"]),
        (("calyx", "tr"), ["trust"]),
        (("calyx", "trust", ""), ["add", "list", "remove"]),
        (("calyx", "trust", "add", "alice", "--role", ""), ["human", "agent"]),
        (("calyx", "sign-lease", "-n", "shop", "--role", "a"), ["agent"]),
        (("calyx", "report", "--format", ""), ["md", "json"]),
        (("calyx", "report", "--for"), ["--format"]),
        (("calyx", "completion", ""), []),  # a positional with choices: nothing to guess
        (("calyx", "status", "--w"), ["--watch"]),
        (("calyx", "status", "--int"), []),  # hidden option
        (("calyx", "-n", "x", "audit", "v"), ["verify"]),
    ],
)
def test_bash(tmp_path: Path, words: tuple[str, ...], expected: list[str]) -> None:
    assert bash_complete(tmp_path, *words) == expected


def test_bash_completes_files_for_key_options(tmp_path: Path) -> None:
    (tmp_path / "alice.key").write_text("x")
    (tmp_path / "lease.yaml").write_text("x")
    assert bash_complete(tmp_path, "calyx", "sign-lease", "--key", "al") == ["alice.key"]
    assert bash_complete(tmp_path, "calyx", "sign-lease", "x", "-f", "le") == ["lease.yaml"]
    assert bash_complete(tmp_path, "calyx", "keygen", "ali") == ["alice.key"]
    # not a file option: no files offered
    assert bash_complete(tmp_path, "calyx", "sign-lease", "--signer", "al") == []


# ------------------------------------------------------------------------------------- fish


def fish_complete(tmp_path: Path, line: str) -> list[str]:
    f = tmp_path / "calyx.fish"
    f.write_text(script("fish"))
    proc = subprocess.run(
        [need("fish"), "--no-config", "-c", f"source {f}; complete -C'{line}'"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert proc.stderr == "", proc.stderr
    return sorted(line.split("\t")[0] for line in proc.stdout.splitlines() if line)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("calyx sig", ["sign-lease"]),
        ("kubectl-calyx sig", ["sign-lease"]),
        ("calyx trust ", ["add", "list", "remove"]),
        ("calyx trust add alice --role ", ["agent", "human"]),
        ("calyx report --format ", ["json", "md"]),
        ("calyx report --for", ["--format"]),
    ],
)
def test_fish(tmp_path: Path, line: str, expected: list[str]) -> None:
    assert fish_complete(tmp_path, line) == expected


def test_fish_completes_files_for_key_options(tmp_path: Path) -> None:
    (tmp_path / "alice.key").write_text("x")
    assert fish_complete(tmp_path, "calyx sign-lease --key al") == ["alice.key"]
    assert fish_complete(tmp_path, "calyx sign-lease --signer al") == []


# -------------------------------------------------------------------------------------- zsh


def test_zsh_interactive_tab(tmp_path: Path) -> None:
    """A real interactive zsh (compinit, the script sourced as a user would) in tmux: type a
    partial command, press Tab, read the edited command line back from the screen."""
    zsh, tmux = need("zsh"), need("tmux")
    (tmp_path / "_calyx").write_text(script("zsh"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "calyx").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "calyx").chmod(0o755)
    (tmp_path / ".zshrc").write_text(
        f"PS1='READY> '\nautoload -U compinit && compinit -u -D\nsource {tmp_path / '_calyx'}\n"
    )
    sock = f"calyx-test-{uuid.uuid4().hex[:8]}"
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "ZDOTDIR": str(tmp_path),
        "TERM": "xterm",
    }
    shell = " ".join(f"{k}={v}" for k, v in env.items())

    def tm(*args: str) -> str:
        return subprocess.run(
            [tmux, "-L", sock, *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout

    def screen_has(line: str, timeout: float = 10) -> str:
        """Wait for a screen line that is exactly ``line`` (tmux drops trailing blanks)."""
        deadline = time.monotonic() + timeout
        out = ""
        while time.monotonic() < deadline:
            out = tm("capture-pane", "-p", "-t", "z")
            if any(row.rstrip() == line for row in out.splitlines()):
                return out
            time.sleep(0.1)
        raise AssertionError(f"{line!r} not on the screen:\n{out}")

    tm("new-session", "-d", "-s", "z", "-x", "200", "-y", "20", f"env -i {shell} {zsh} -d -i")
    try:
        screen_has("READY>")
        tm("send-keys", "-t", "z", "calyx sig", "Tab")
        screen_has("READY> calyx sign-lease")
        tm("send-keys", "-t", "z", "C-u", "calyx trust add alice --role h", "Tab")
        screen_has("READY> calyx trust add alice --role human")
        tm("send-keys", "-t", "z", "C-u", "calyx report --fo", "Tab")
        screen_has("READY> calyx report --format")
    finally:
        subprocess.run([tmux, "-L", sock, "kill-server"], capture_output=True, env=os.environ)
