"""Per-deployment ssh keys: one client key pair and one host key per node.

Nothing is baked into images: each ``nxc start`` makes fresh keys, hands the public
parts to every node through the deployment and each private host key to its node only.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from nxc.errors import NxcError
from nxc.tools import require_tool


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public_text: str

    @property
    def public(self) -> Path:
        return self.private.with_name(self.private.name + ".pub")


def generate_key(path: Path, comment: str) -> KeyPair:
    """Create an ed25519 key pair at ``path`` (and ``path.pub``), replacing any old one."""
    ssh_keygen = require_tool("ssh-keygen")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for old in (path, path.with_name(path.name + ".pub")):
        old.unlink(missing_ok=True)
    result = subprocess.run(
        [ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise NxcError(f"ssh-keygen failed for {path}: {result.stderr.strip()}")
    public = path.with_name(path.name + ".pub").read_text().strip()
    return KeyPair(private=path, public_text=public)


def known_hosts_line(host: str, port: int | None, public_key: str) -> str:
    """One known_hosts line; non-standard ports use the ``[host]:port`` form."""
    key_type, key_data = public_key.split()[:2]
    pattern = host if port in (None, 22) else f"[{host}]:{port}"
    return f"{pattern} {key_type} {key_data}"
