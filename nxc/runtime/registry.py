"""The flavour registry: runtimes found through the ``nxc.flavours`` entry-point group.

nxc registers its own flavours in its ``pyproject.toml``; a third party ships a flavour
as its own package with

    [project.entry-points."nxc.flavours"]
    my-flavour = "my_package.runtime:MyRuntime"

and ``nxc build --list``, ``nxc start -f my-flavour`` and ``nxc start --help`` see it
without any change to nxc. The class is instantiated without arguments.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import cast

from nxc.compat import FLAVOUR_ALIASES
from nxc.errors import NxcError
from nxc.runtime.contract import Runtime

__all__ = [
    "ALIASES",
    "BUILT_BY_NXC",
    "GROUP",
    "UnknownFlavour",
    "buildable_names",
    "canonical",
    "load",
    "names",
    "registered",
]

GROUP = "nxc.flavours"
ALIASES = FLAVOUR_ALIASES  # names the predecessor (NixOS Compose) used
# What nxc's own Nix library (nix/lib, flavours/) can build; a plug-in flavour brings
# its own Nix side and is known once registered.
BUILT_BY_NXC = ("vm-ramdisk", "docker", "g5k-ramdisk", "g5k-image")


class UnknownFlavour(NxcError):
    """No runtime is registered under that name."""


@cache
def registered() -> dict[str, EntryPoint]:
    """Flavour name -> entry point, for every installed flavour."""
    found: dict[str, EntryPoint] = {}
    for point in entry_points(group=GROUP):
        found.setdefault(point.name, point)
    return dict(sorted(found.items()))


def names() -> list[str]:
    return list(registered())


def canonical(name: str) -> str:
    return ALIASES.get(name, name)


def buildable_names() -> list[str]:
    """Flavours some Nix side can build: nxc's own, then registered plug-ins."""
    return [*BUILT_BY_NXC, *(n for n in names() if n not in BUILT_BY_NXC)]


@cache
def load(name: str) -> Runtime:
    """The runtime of flavour ``name`` (an alias is accepted), or a one-line error."""
    flavour = canonical(name)
    point = registered().get(flavour)
    if point is None:
        known = ", ".join(registered()) or "none"
        raise UnknownFlavour(f"no runtime for flavour '{name}' is installed (installed: {known})")
    try:
        cls = point.load()
    except Exception as exc:
        raise NxcError(
            f"flavour '{flavour}' ({point.value}) cannot be loaded: {type(exc).__name__}: {exc}"
        ) from None
    runtime = cast(Runtime, cls())
    if getattr(runtime, "name", None) != flavour:
        raise NxcError(
            f"flavour '{flavour}' ({point.value}) is broken: its runtime calls itself "
            f"{getattr(runtime, 'name', None)!r}"
        )
    return runtime
