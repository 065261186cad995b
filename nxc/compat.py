"""Names nxc keeps from NixOS Compose, its predecessor.

NixOS Compose called the local VM flavour ``vm``; nxc's is ``vm-ramdisk`` (one
kernel + initrd per role), so ``vm`` is accepted as an alias wherever a flavour is
named. Its other flavours that nxc does not build get a one-line error naming the
ones it does. The Nix library applies the same rules (nix/lib/manifest.nix).
"""

from __future__ import annotations

from collections.abc import Sequence

from nxc.errors import NxcError

FLAVOUR_ALIASES = {"vm": "vm-ramdisk"}
# NixOS Compose flavours without an nxc counterpart.
FOREIGN_FLAVOURS = ("nspawn", "g5k-nfs-store", "nixos-test", "nixos-test-driver", "nixos-test-ssh")


def describe(known: Sequence[str]) -> str:
    """``vm-ramdisk (alias vm), docker, …``"""
    aliases = {target: alias for alias, target in FLAVOUR_ALIASES.items()}
    return ", ".join(f"{k} (alias {aliases[k]})" if k in aliases else k for k in known)


def canonical_flavour(name: str, known: Sequence[str]) -> str:
    """The nxc flavour ``name`` stands for; a one-line error if there is none."""
    flavour = FLAVOUR_ALIASES.get(name, name)
    if flavour in known:
        return flavour
    if name in FOREIGN_FLAVOURS:
        raise NxcError(
            f"flavour '{name}' (from NixOS Compose) is not supported by nxc "
            f"(supported: {describe(known)})"
        )
    raise NxcError(f"unknown flavour '{name}' (known: {describe(known)})")
