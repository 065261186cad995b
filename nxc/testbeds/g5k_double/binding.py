"""Binding the double's nodes to machines that really answer ssh.

The binding is an OpenSSH-style config: one ``Host`` block per node (its FQDN or
its short name) giving ``HostName``, ``Port`` and ``User`` of the machine standing in
for it (a VM, an sshd in a network namespace). Wildcard blocks (``Host *``) may
give shared settings; as in OpenSSH the first value found for a key wins. The same
file works with ``ssh -F FILE paravance-1.rennes.grid5000.fr``.

When a binding is given, only bound nodes are alive: OAR hands out nothing else.
"""

from __future__ import annotations

import fnmatch
import shlex
from dataclasses import dataclass
from pathlib import Path

from nxc.errors import NxcError
from nxc.testbeds.g5k_double.inventory import Inventory

_KEYS = {"hostname": "hostname", "port": "port", "user": "user"}


class BindingError(NxcError):
    """The binding file is unreadable or names something that is not a node."""


@dataclass(frozen=True)
class SshEndpoint:
    alias: str  # the name in the Host line
    hostname: str
    port: int = 22
    user: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "alias": self.alias,
            "hostname": self.hostname,
            "port": self.port,
            "user": self.user,
        }


@dataclass
class _Block:
    patterns: list[str]
    settings: list[tuple[str, str]]

    def matches(self, name: str) -> bool:
        positive = False
        for pattern in self.patterns:
            if pattern.startswith("!"):
                if fnmatch.fnmatchcase(name, pattern[1:]):
                    return False
            elif fnmatch.fnmatchcase(name, pattern):
                positive = True
        return positive


def _is_literal(pattern: str) -> bool:
    return not any(ch in pattern for ch in "*?!")


def _parse_blocks(text: str, origin: str) -> list[_Block]:
    blocks: list[_Block] = [_Block(["*"], [])]  # settings before any Host line
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=" in line.split(None, 1)[0]:
            key, _, rest = line.partition("=")
        else:
            key, _, rest = line.partition(" ")
        key, rest = key.strip().lower(), rest.strip().lstrip("=").strip()
        try:
            words = shlex.split(rest)
        except ValueError as exc:
            raise BindingError(f"{origin}:{number}: {exc}") from None
        if key == "host":
            if not words:
                raise BindingError(f"{origin}:{number}: Host needs at least one name")
            blocks.append(_Block(words, []))
        elif key == "match":
            raise BindingError(f"{origin}:{number}: Match blocks are not supported in a binding")
        elif key in _KEYS:
            if len(words) != 1:
                raise BindingError(f"{origin}:{number}: {key} takes one value")
            blocks[-1].settings.append((_KEYS[key], words[0]))
    return blocks


def parse_bindings(
    text: str, inventory: Inventory, origin: str = "binding"
) -> dict[str, SshEndpoint]:
    """Map node FQDN -> endpoint for every literal ``Host`` name of the config."""
    blocks = _parse_blocks(text, origin)
    short = {node.uid: node.fqdn for node in inventory.all_nodes()}
    bindings: dict[str, SshEndpoint] = {}
    for block in blocks[1:]:
        for alias in (p for p in block.patterns if _is_literal(p)):
            fqdn = alias if inventory.node(alias) is not None else short.get(alias)
            if fqdn is None:
                raise BindingError(f"{origin}: host {alias!r} is not a node of the inventory")
            if fqdn in bindings:
                continue  # OpenSSH: the first block for a name wins
            bindings[fqdn] = _resolve(alias, blocks, origin)
    return bindings


def _resolve(alias: str, blocks: list[_Block], origin: str) -> SshEndpoint:
    values: dict[str, str] = {}
    for block in blocks:
        if block is blocks[0] or block.matches(alias):
            for key, value in block.settings:
                values.setdefault(key, value)
    port_text = values.get("port", "22")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BindingError(f"{origin}: host {alias!r}: bad port {port_text!r}")
    hostname = values.get("hostname", alias).replace("%h", alias)
    return SshEndpoint(alias, hostname, int(port_text), values.get("user"))


def load_bindings(path: Path, inventory: Inventory) -> dict[str, SshEndpoint]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise BindingError(f"{path}: cannot read the binding ({exc.strerror})") from None
    return parse_bindings(text, inventory, str(path))
