"""Where a Grid'5000 run finds what lies outside the composition: credentials, the ssh
config that reaches the nodes, the known host keys of their standard environment, a
default site, console logs, and where images are published.

Each comes from the flavour's option when given, else from an environment variable,
else from Grid'5000's usual place (``~/.ssh/config``, ``~/.ssh/known_hosts`` and
``/etc/ssh/ssh_known_hosts`` on a frontend). The rehearsal testbed writes a file of
``export`` lines setting the variables (``nxc g5k rehearsal env``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nxc.errors import NxcError
from nxc.g5k import G5kConfig, load_config
from nxc.runtime.options import FlavourOptions

ENV_SSH_CONFIG = "NXC_G5K_SSH_CONFIG"
ENV_KNOWN_HOSTS = "NXC_G5K_KNOWN_HOSTS"
ENV_SITE = "NXC_G5K_SITE"
ENV_CONSOLES = "NXC_G5K_CONSOLES"
ENV_PUBLIC_DIR = "NXC_G5K_PUBLIC_DIR"
ENV_PUBLIC_URL = "NXC_G5K_PUBLIC_URL"


class G5kSettingsError(NxcError):
    """A file or setting the Grid'5000 flavours need is missing or unusable."""


@dataclass(frozen=True)
class G5kSettings:
    """Everything about the user's Grid'5000 setup a run needs (no secrets kept here
    beyond what ``config`` holds, which is never written anywhere)."""

    config: G5kConfig
    ssh_config: tuple[Path, ...]  # OpenSSH client config files (may be empty)
    known_hosts: tuple[Path, ...]  # host keys of the nodes' standard environment
    default_site: str | None
    consoles: Path | None  # directory of <fqdn>.log console captures, if any
    public_dir: Path | None  # where to publish images (served as public_url)
    public_url: str | None

    def to_state(self) -> dict[str, object]:
        """What later nxc processes need (no credentials: they are loaded again)."""
        return {
            "config_file": self.config.source,
            "ssh_config": [str(p) for p in self.ssh_config],
            "known_hosts": [str(p) for p in self.known_hosts],
            "consoles": str(self.consoles) if self.consoles else None,
        }


def _existing(paths: list[Path]) -> tuple[Path, ...]:
    return tuple(p for p in paths if p.is_file())


def _path_setting(
    options: FlavourOptions, option: str, env: Mapping[str, str], variable: str
) -> Path | None:
    given = options.get(option)
    if given:
        return Path(str(given)).expanduser()
    if env.get(variable):
        return Path(env[variable]).expanduser()
    return None


def resolve_settings(
    options: FlavourOptions,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
    *,
    credentials: bool = True,
) -> G5kSettings:
    """Resolve the run's settings; a missing explicit file is a one-line error."""
    env = os.environ if env is None else env
    home = home or Path.home()
    config_path = options.get("g5k-config")
    config = (
        load_config(Path(str(config_path)).expanduser() if config_path else None, env, home)
        if credentials
        else G5kConfig(uri="", username="")
    )

    ssh_config_file = _path_setting(options, "ssh-config", env, ENV_SSH_CONFIG)
    if ssh_config_file is not None:
        if not ssh_config_file.is_file():
            raise G5kSettingsError(f"ssh config {ssh_config_file} does not exist")
        ssh_config: tuple[Path, ...] = (ssh_config_file,)
    else:
        ssh_config = _existing([home / ".ssh" / "config"])

    known_file = _path_setting(options, "known-hosts", env, ENV_KNOWN_HOSTS)
    if known_file is not None:
        if not known_file.is_file():
            raise G5kSettingsError(f"known_hosts file {known_file} does not exist")
        known_hosts: tuple[Path, ...] = (known_file,)
    else:
        known_hosts = _existing([home / ".ssh" / "known_hosts", Path("/etc/ssh/ssh_known_hosts")])

    consoles = _path_setting(options, "consoles", env, ENV_CONSOLES)
    public_dir = _path_setting(options, "public-dir", env, ENV_PUBLIC_DIR)
    public_url = options.get("public-url") or env.get(ENV_PUBLIC_URL) or None
    return G5kSettings(
        config=config,
        ssh_config=ssh_config,
        known_hosts=known_hosts,
        default_site=env.get(ENV_SITE) or None,
        consoles=consoles if consoles and consoles.is_dir() else None,
        public_dir=public_dir,
        public_url=str(public_url).rstrip("/") if public_url else None,
    )
