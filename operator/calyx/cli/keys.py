"""Ed25519 key files: base64 of the 32-byte seed, owner-only (0600).

A private key readable by group or others is refused rather than used: by the time someone
notices, it may already have been copied.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path

from nacl.signing import SigningKey

from calyx.cli.errors import CliError


def generate(path: Path, force: bool = False) -> bytes:
    """Write a new seed to ``path`` (mode 0600, never world-readable even briefly)."""
    seed = bytes(SigningKey.generate())
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise CliError(f"{path} already exists; use --force to overwrite it") from None
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(base64.b64encode(seed).decode() + "\n")
    return seed


def load_seed(path: Path) -> bytes:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CliError(f"key file {path} not found") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CliError(
            f"key file {path} is accessible by group/others (mode {stat.S_IMODE(st.st_mode):04o});"
            f" run: chmod 600 {path}"
        )
    text = path.read_text().strip()
    try:
        seed = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CliError(f"key file {path} is not base64") from None
    if len(seed) != 32:
        raise CliError(f"key file {path} holds {len(seed)} bytes, expected a 32-byte Ed25519 seed")
    return seed


def public_key_b64(seed: bytes) -> str:
    return base64.b64encode(bytes(SigningKey(seed).verify_key)).decode()
