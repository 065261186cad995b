"""The files of one rehearsal testbed, all under its config directory (and a short
runtime directory for sockets), and its settings document (``rehearsal.json``)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nxc.errors import NxcError
from nxc.fsutil import atomic_write, read_json
from nxc.project import runtime_base_dir

VERSION = 1
SITE = "rennes"
CLUSTER = "paravance"
SITE_PREFIX = 20  # rennes' production network is a /20
SITE_GATEWAY = "172.16.111.254"
MGMT_ADDRESS = "10.0.2.15/24"  # where QEMU's user-mode network forwards the ssh port


class RehearsalError(NxcError):
    """The rehearsal testbed cannot be brought up, used or torn down."""


@dataclass(frozen=True)
class VmSpec:
    fqdn: str
    short: str
    ssh_port: int
    site_mac: str
    site_addr: str  # CIDR
    mgmt_mac: str


@dataclass(frozen=True)
class Settings:
    """``rehearsal.json``: what the daemon needs to run the testbed."""

    nodes: list[VmSpec]
    user: str
    kernel: str
    initrd: str
    kernel_params: str
    memory_mb: int
    accel: str
    api_port: int
    shared_dir: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        document = {"nxc_rehearsal": VERSION, **asdict(self)}
        atomic_write(path, json.dumps(document, indent=2) + "\n", 0o600)

    @classmethod
    def load(cls, path: Path) -> Settings:
        try:
            document = read_json(path)
            if document.get("nxc_rehearsal") != VERSION:
                raise RehearsalError(f"{path}: not a rehearsal settings file (version)")
            values: dict[str, Any] = {k: v for k, v in document.items() if k != "nxc_rehearsal"}
            values["nodes"] = [VmSpec(**n) for n in values["nodes"]]
            return cls(**values)
        except (KeyError, TypeError, AttributeError) as exc:
            raise RehearsalError(f"{path}: corrupt rehearsal settings ({exc!r})") from None


class Layout:
    """Paths of one testbed (``root`` is the ``--config-dir``)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:10]
        # unix socket paths are limited to 108 bytes: sockets go in a short directory
        self.run = runtime_base_dir() / f"nxc-rehearsal-{digest}"

    @property
    def settings(self) -> Path:
        return self.root / "rehearsal.json"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.jsonl"

    @property
    def ready(self) -> Path:
        return self.root / "ready.json"

    @property
    def daemon_log(self) -> Path:
        return self.root / "daemon.log"

    @property
    def client_config(self) -> Path:
        return self.root / "python-grid5000.yaml"

    @property
    def ssh_config(self) -> Path:
        return self.root / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def env_file(self) -> Path:
        return self.root / "env"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def user_key(self) -> Path:
        return self.root / "keys" / "user"

    @property
    def admin_key(self) -> Path:
        return self.root / "keys" / "admin"

    @property
    def consoles(self) -> Path:
        return self.root / "consoles"

    @property
    def switch(self) -> Path:
        return self.run / "switch"

    @property
    def password_file(self) -> Path:
        return self.root / "keys" / "api-password"

    @property
    def token_file(self) -> Path:
        return self.root / "keys" / "control-token"

    def host_key(self, short: str) -> Path:
        return self.keys / "hosts" / short

    def qmp(self, short: str) -> Path:
        return self.run / f"{short}.qmp"

    def console(self, fqdn: str) -> Path:
        return self.consoles / f"{fqdn}.log"

    def qemu_log(self, short: str) -> Path:
        return self.root / "logs" / f"{short}.qemu.log"

    def owns(self, path: Path) -> bool:
        """Paths ``down`` may remove: inside the config or the runtime directory."""
        resolved = path.resolve() if path.exists() else path
        return any(resolved == base or base in resolved.parents for base in (self.root, self.run))
