"""How much memory a ramdisk role needs to boot, estimated from its built image.

At boot the compressed initrd and its unpacked copy both sit in RAM, and a NixOS
role's initrd carries its whole closure (a squashfs, itself compressed, so its
unpacked copy is about as large); a selftest initrd is gzip'd cpio, about 2.5x
larger unpacked. Three times the initrd, plus the kernel and room for the system
to run, covers both (nixpkgs' own netboot test gives a NixOS image 2000 MB).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from nxc.errors import NxcError

RUNNING_MB = 128  # the system itself, once booted, at least
FLOOR_MB = {"nixos": 1024, "selftest": 256}


def least_memory_mb(kernel: Path | None, initrd: Path | None) -> int:
    """Below this (MiB) the image surely cannot boot: the kernel, the compressed initrd
    and its unpacked copy (at least twice as large) do not fit."""
    total = 0
    for path, factor in ((kernel, 1), (initrd, 3)):
        try:
            total += factor * (path.stat().st_size if path is not None else 0)
        except OSError:
            continue
    return math.ceil(total / 2**20)


def boot_memory_mb(kernel: Path | None, initrd: Path | None, image_kind: str = "nixos") -> int:
    """The memory (MiB) a node needs to boot this kernel + initrd (what it surely needs,
    plus room for the system to run), at least the floor of the image kind."""
    return max(FLOOR_MB.get(image_kind, 256), least_memory_mb(kernel, initrd) + RUNNING_MB)


def check_memory(
    role: str,
    memory_mb: int,
    needed_mb: int,
    least_mb: int,
    where: str,
    fix: str,
    warn: Callable[[str], None],
) -> None:
    """A one-line error when ``memory_mb`` is below what the image surely needs
    (``least_mb``); a warning when it is only below the estimate (``needed_mb``): the
    estimate is generous, and a user may know better (if the node then fails, its
    console's cause — out of memory, a panic — is what nxc reports)."""
    problem = (
        f"role {role}: {memory_mb} MiB ({where}) is too little to boot its image: about "
        f"{needed_mb} MiB are needed (the compressed initrd and its unpacked copy both sit "
        f"in RAM at boot)"
    )
    if memory_mb < least_mb:
        raise NxcError(f"{problem}; {fix}")
    if memory_mb < needed_mb:
        warn(f"warning: {problem}; trying anyway")
