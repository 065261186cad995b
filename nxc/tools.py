"""Locate host tools, with an install hint when one is missing."""

from __future__ import annotations

import shutil

from nxc.errors import ToolMissing

# Debian package that provides each tool, for the error message.
DEBIAN_PACKAGE = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "vde_switch": "vde2",
    "nix": "nix-bin",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "tmux": "tmux",
    "docker": "docker.io",
    "dockerd": "docker.io",
    "cpio": "cpio",
    "redis-server": "redis-server",
    "socat": "socat",
}


def require_tool(name: str) -> str:
    """Return the absolute path of ``name`` or raise ToolMissing with an install hint."""
    path = shutil.which(name)
    if path is None:
        package = DEBIAN_PACKAGE.get(name, name)
        raise ToolMissing(
            f"required tool '{name}' not found on PATH (install it: apt-get install {package})"
        )
    return path
